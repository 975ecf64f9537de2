"""The gate's evidence: what is logged next to a verdict to explain it, and never changes it.

In: the MLflow client, the pipeline config, the challenger's run id (or run), its fitted model, the holdout and
its scored predictions (or the verdict, for the model card). Out: what was logged (plot artifacts, the SHAP
summary, the suspect-label search, the model card URI), or a ``{"skipped": why}`` / None when it could not
be: each step catches its own failure, logs a warning and lets the gate go on. Called by
:func:`airloop.model.evaluate.evaluate_challenger`.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from airloop.config import PipelineConfig
from airloop.store import lake

log = logging.getLogger(__name__)


def log_plots(client: MlflowClient, cfg: PipelineConfig, run_id: str, model: Any, holdout: pd.DataFrame, scored: dict):
    """Log the evaluation plots to the challenger's run; a plotting failure never fails the gate."""
    from airloop.model import plots

    try:
        return plots.log_evaluation_plots(client, run_id, cfg, model, holdout, scored)
    except Exception as err:  # plots are evidence, not a decision: say so and go on
        log.warning("evaluation plots not logged for run %s: %s", run_id, err)
        return []


def log_explanations(
    client: MlflowClient, cfg: PipelineConfig, run_id: str, model: Any, holdout: pd.DataFrame, tags: dict
) -> dict[str, Any]:
    """Global SHAP importance on a holdout sample (:mod:`airloop.model.explain`), logged to the run as
    ``explanations/shap_global.json`` and ``explanations/shap_importance.png``. Returns {"explainer", "rows",
    "top": [{"feature", "mean_abs_shap", "mean_shap"}] (10 largest), "artifacts"} or {"skipped": why};
    an explanation failure never fails the gate."""
    from airloop.model import explain
    from airloop.model.plots import _pyplot

    try:
        background = holdout
        if tags.get("airloop.train_uri"):
            background = lake.read_parquet(tags["airloop.train_uri"])
        explainer = explain.Explainer(model, background, seed=cfg.training.seed)
        importance = explain.global_importance(explainer, holdout, seed=cfg.training.seed)
        rows = min(len(holdout), explain.GLOBAL_ROWS)
        client.log_dict(
            run_id,
            {"explainer": explainer.kind, "rows": rows, "importance": importance},
            "explanations/shap_global.json",
        )
        fig = explain.importance_figure(importance)
        try:
            client.log_figure(run_id, fig, "explanations/shap_importance.png")
        finally:
            _pyplot().close(fig)
    except Exception as err:  # explanations are evidence, not a decision
        log.warning("SHAP explanations not computed for run %s: %s", run_id, err)
        return {"skipped": f"SHAP explanations not computed: {err}"}
    return {
        "explainer": explainer.kind,
        "rows": rows,
        "top": importance[:10],
        "artifacts": ["explanations/shap_global.json", "explanations/shap_importance.png"],
    }


def queue_suspects(cfg: PipelineConfig, model: Any, tags: dict, run_id: str) -> dict[str, Any]:
    """Suspect training labels to the review queue (:mod:`airloop.model.suspects`); never fails the gate."""
    from airloop.model.suspects import review_suspects

    if not cfg.evaluation.suspect_labels:
        return {"skipped": "evaluation.suspect_labels is off"}
    if not tags.get("airloop.train_uri"):
        return {"skipped": "the run has no airloop.train_uri tag"}
    try:
        return review_suspects(cfg, model, lake.read_parquet(tags["airloop.train_uri"]), run_id)
    except Exception as err:  # a review aid, not a decision
        log.warning("suspect labels not searched for run %s: %s", run_id, err)
        return {"skipped": f"suspect labels not searched: {err}"}


def publish_model_card(client: MlflowClient, cfg: PipelineConfig, run: Any, verdict: dict[str, Any]) -> str | None:
    """The model card of the verdict (:mod:`airloop.model.modelcard`), published to the run; its URI, or None
    when it could not be written (never fails the gate)."""
    from airloop.model import modelcard

    try:
        return modelcard.publish(client, cfg, run, verdict)
    except Exception as err:  # the card documents the decision; it must not change it
        log.warning("model card not written for run %s: %s", run.info.run_id, err)
        return None
