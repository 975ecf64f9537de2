"""The evaluation gate ("blessing"): may the newly trained model become the challenger?

The challenger and the current champion are scored on the SAME frozen holdout (the challenger's test split),
so the comparison is like for like. Blessed only if every check passes:

1. ``min_value``: the primary metric reaches ``evaluation.min_value`` (when set);
   ``feasibility`` (first promotion only): the pipeline's feasibility report is not a no-go, or was overridden;
   ``baseline``: the one-sided 95% lower bound of the improvement over the trivial baseline (class prior or
   training mean, :mod:`airloop.model.baseline`) is above 0, with or without a champion;
2. ``champion``: the one-sided 95% lower confidence bound (paired bootstrap) of the improvement over the
   champion is above ``-evaluation.tolerance`` (tolerance 0: credibly better, not better by the luck of one
   holdout);
3. ``slices``: no slice of a ``segment_columns`` column (with enough rows) is worse than the champion's by more
   than ``evaluation.slice_tolerance``;
4. ``production_window``: on the latest labeled production rows the challenger did not train on, it is not
   credibly worse than the champion (checked once labels exist);
5. ``infra``: the model loads and scores in a fresh Python process, and row order does not change its output.

The verdict is written to the challenger's MLflow run (tags ``airloop.gate.*``, artifact gate/verdict.json),
with evaluation plots (plots/) and a model card (model_card.md). A blessed model is registered, gets the alias
``challenger``, and carries the card as its description. See docs/models.md.

The statistics and checks live in :mod:`airloop.model.gate`, the fresh-process check in :mod:`airloop.model.infra`,
the verdict's assembly, registration, record and summary in :mod:`airloop.model.verdict`, the plots, explanations,
suspect labels and model card logged beside it in :mod:`airloop.model.evidence`; this module is the stage entry
point: it scores challenger and champion, applies the checks and hands the result on.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo
from airloop.model import evidence, infra
from airloop.model.baseline import baseline_check, baseline_kind, baseline_scored
from airloop.model.gate import champion_check, compare, slice_check, slice_metrics, window_check
from airloop.model.metrics import check_metric, compute_metrics, greater_is_better, predict_with_proba
from airloop.model.verdict import assemble_verdict, record_verdict, register_blessed, summarize_verdict
from airloop.store import lake, models, registry, tracking
from airloop.store.lake import BATCH_COLUMN

log = logging.getLogger(__name__)

MIN_WINDOW_ROWS = 100  # labeled production rows needed before the production window is compared


class GateError(BadInput):
    """The gate cannot judge: e.g. the training run has no holdout tag."""


def _score(cfg: PipelineConfig, model: Any, holdout: pd.DataFrame) -> tuple[dict[str, float], dict]:
    """(metrics, raw predictions) of a fitted sklearn model on the holdout."""
    features = list(getattr(model, "feature_names_in_", [c for c in holdout.columns if c != cfg.target]))
    missing = [c for c in features if c not in holdout.columns]
    if missing:
        raise GateError(f"holdout lacks columns {missing} the model needs")
    y_pred, y_proba, classes = predict_with_proba(cfg.task, model, holdout[features])
    y_true = holdout[cfg.target].to_numpy()
    metrics = compute_metrics(cfg.task, y_true, y_pred, y_proba, classes=classes)
    return metrics, {"y_pred": y_pred, "y_proba": y_proba, "classes": classes, "features": features}


def production_window(cfg: PipelineConfig, lake: Any, exclude_batches: set[str]) -> tuple[pd.DataFrame, list[str]]:
    """Labeled rows of the latest ``retrain.window_days`` scored batches (``predictions/`` zone) that are not
    in ``exclude_batches`` (the challenger's training data); features from ``validated/``, labels joined
    from ``labels/``. Returns (frame, batches); an empty frame when no labels have arrived yet."""
    from airloop.data.datasets import attach_labels

    scored = [b for b in lake.batches("predictions") if b not in exclude_batches]
    if not scored or cfg.id_column is None:
        return pd.DataFrame(), []
    frame = lake.read_zone("validated", scored)
    if frame.empty:
        return frame, []
    frame = attach_labels(cfg, frame, lake.read_zone("labels"))
    if cfg.target not in frame.columns:
        return pd.DataFrame(), []
    frame = frame[frame[cfg.target].notna()]
    batches = sorted(frame[BATCH_COLUMN].astype(str).unique())[-cfg.retrain.window_days :] if len(frame) else []
    frame = frame[frame[BATCH_COLUMN].astype(str).isin(batches)].reset_index(drop=True)
    return frame, batches


def _window(
    cfg: PipelineConfig, metric: str, challenger: Any, champion: Any, train_uri: str | None, data_lake: Any
) -> dict[str, Any]:
    """Score challenger and champion on the production window (see :func:`production_window`)."""
    exclude: set[str] = set()
    if train_uri:
        train = lake.read_parquet(train_uri)
        if BATCH_COLUMN in train.columns:
            exclude = set(train[BATCH_COLUMN].astype(str).unique())
    frame, batches = production_window(cfg, data_lake, exclude)
    if len(frame) < MIN_WINDOW_ROWS:
        return {
            "skipped": f"no labeled production window yet outside the challenger's training data "
            f"({len(frame)} rows, need {MIN_WINDOW_ROWS})"
        }
    try:
        chall_metrics, chall = _score(cfg, challenger, frame)
        champ_metrics, champ = _score(cfg, champion, frame)
    except GateError as err:
        return {"skipped": f"production window not comparable: {err}"}
    if metric not in chall_metrics or metric not in champ_metrics:
        return {"skipped": f"{metric} undefined on the production window ({len(frame)} rows)"}
    y_true = frame[cfg.target].to_numpy()
    return {
        "rows": len(frame),
        "batches": batches,
        "challenger": chall_metrics[metric],
        "champion": champ_metrics[metric],
        "challenger_metrics": chall_metrics,
        "champion_metrics": champ_metrics,
        "compare": compare(cfg, metric, y_true, chall, champ),
    }


def candidate_from_run(cfg: PipelineConfig, run_id: str) -> dict[str, Any]:
    """Rebuild the :func:`airloop.model.train.select_best` dict of a training run (for DAGs that get a run id)."""
    client = MlflowClient(tracking_uri=tracking.configure_mlflow())
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise GateError(f"no MLflow run {run_id!r} to evaluate") from None
    metric = cfg.primary_metric
    outputs = getattr(run, "outputs", None)
    model_ids = [o.model_id for o in (outputs.model_outputs if outputs else [])]
    model_uri = f"models:/{model_ids[-1]}" if model_ids else f"runs:/{run_id}/model"
    metrics = run.data.metrics
    return {
        "run_id": run_id,
        "candidate": run.data.tags.get("airloop.candidate"),
        "model_uri": model_uri,
        "cv_score": metrics.get(f"cv_{metric}"),
        "test_metrics": {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")},
        "primary_metric": metric,
        "greater_is_better": greater_is_better(metric),
    }


def evaluate_challenger(
    cfg: PipelineConfig, candidate: dict[str, Any], run_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply the gate to ``candidate`` (the dict of :func:`airloop.model.train.select_best`).

    Returns {"blessed", "reasons" (one line per check, passed or failed), "checks", "metric",
    "challenger_metric", "champion_metric", "champion_version", "improvement" (direction-aware: positive =
    better), "ci" ([lo, hi] two-sided 95%, or None), "lower_bound" (one-sided 95%, what the gate decides on),
    "metrics" (all challenger holdout metrics), "slices",
    "production_window", "version" (registered version, None if rejected), "plots", "model_card_uri",
    "summary", "run_id", "run_url", "holdout_uri"}.
    """
    from airloop.store.lake import Lake

    metric = cfg.primary_metric
    check_metric(cfg.task, metric)
    client = MlflowClient(tracking_uri=tracking.configure_mlflow())
    run_id, model_uri = candidate["run_id"], candidate["model_uri"]
    run = client.get_run(run_id)
    holdout_uri = run.data.tags.get("airloop.test_uri")
    if not holdout_uri:
        raise GateError(f"run {run_id}: no airloop.test_uri tag, so there is no frozen holdout to judge on")
    holdout = lake.read_parquet(holdout_uri)
    holdout = holdout[holdout[cfg.target].notna()].reset_index(drop=True)
    y_true = holdout[cfg.target].to_numpy()

    challenger = models.load_uri(model_uri)
    chall_metrics, chall = _score(cfg, challenger, holdout)
    # The fresh-process load takes seconds of interpreter start-up and imports: it runs while the statistics and
    # the plots below are computed.
    infra_rows = holdout[chall["features"]].head(infra.INFRA_ROWS)
    fresh = infra.start_check(model_uri, infra_rows, list(chall["y_pred"][: len(infra_rows)]))
    try:
        value = chall_metrics.get(metric)
        checks: list[dict[str, Any]] = []
        if value is None or math.isnan(value):
            checks.append({"check": "metric", "passed": False, "detail": f"{metric} is undefined on this holdout"})

        min_value = cfg.evaluation.min_value
        if min_value is not None and value is not None:
            ok = value >= min_value if greater_is_better(metric) else value <= min_value
            op = (">=" if ok else "<") if greater_is_better(metric) else ("<=" if ok else ">")
            checks.append(
                {"check": "min_value", "passed": ok, "detail": f"{metric} {value:.4f} {op} min_value {min_value:g}"}
            )

        baseline = None
        if value is not None and not math.isnan(value):
            baseline = _baseline(cfg, metric, run.data.tags.get("airloop.train_uri"), y_true, chall)
            if baseline is not None:
                base_cmp = baseline.pop("_cmp")
                if cfg.evaluation.baseline:
                    checks.append(baseline_check(cfg, metric, value, baseline["value"], base_cmp))
                else:
                    checks.append({"check": "baseline", "passed": True, "detail": "evaluation.baseline is off"})

        champion_mv = registry.get_version(cfg, registry.CHAMPION)
        champion_version = str(champion_mv.version) if champion_mv is not None else None
        champion_value, cmp, champ, champion, window = None, None, None, None, None
        if champion_mv is None:
            from airloop.model.feasibility import gate_check

            checks.append({"check": "champion", "passed": True, "detail": "no champion yet: nothing to compare"})
            checks.append(gate_check(cfg))  # a no-go feasibility report stops the first promotion
        else:
            try:
                champion = models.load_version(cfg, champion_version)
                champ_metrics, champ = _score(cfg, champion, holdout)
            except GateError as err:
                # The data changed shape since the champion was trained: it cannot compete on this holdout.
                champion, champ = None, None
                checks.append(
                    {"check": "champion", "passed": True, "detail": f"champion v{champion_version} cannot score: {err}"}
                )
            else:
                champion_value = champ_metrics.get(metric)
                if value is not None and champion_value is not None:
                    cmp = compare(cfg, metric, y_true, chall, champ)
                    checks.append(champion_check(cfg, metric, value, champion_value, champion_version, cmp))

        slices = slice_metrics(cfg, metric, holdout, chall, champ)
        checks.append(slice_check(cfg, metric, slices, champ is not None))
        if champion is not None:
            window = _window(cfg, metric, challenger, champion, run.data.tags.get("airloop.train_uri"), Lake(cfg.name))
            checks.append(window_check(cfg, metric, window))

        # Evidence that does not depend on the verdict, also while the fresh process runs.
        plots = evidence.log_plots(client, cfg, run_id, challenger, holdout, chall)
        explanations = evidence.log_explanations(client, cfg, run_id, challenger, holdout, run.data.tags)
        passed, detail = fresh.result()
    finally:
        fresh.cancel()  # a no-op once it has finished; ends it when a check above raised
    checks.append({"check": "infra", "passed": passed, "detail": detail})

    uncertainty = _conformal(cfg, y_true, chall)
    version = None
    if all(c["passed"] for c in checks):
        version = register_blessed(cfg, candidate, run, metric, value, champion_version, uncertainty)
    verdict = assemble_verdict(
        checks=checks,
        metric=metric,
        value=value,
        metrics=chall_metrics,
        champion_value=champion_value,
        champion_version=champion_version,
        cmp=cmp,
        baseline=baseline,
        conformal=uncertainty,
        slices=slices,
        window=window,
        version=version,
        run_id=run_id,
        holdout_uri=holdout_uri,
    )
    verdict["plots"] = plots
    verdict["explanations"] = explanations
    verdict["suspect_labels"] = evidence.queue_suspects(cfg, challenger, run.data.tags, run_id)
    verdict["summary"] = summarize_verdict(cfg, candidate, verdict, len(holdout))
    verdict["model_card_uri"] = evidence.publish_model_card(client, cfg, run, verdict)
    record_verdict(client, cfg, verdict, run_info)
    log.info("%s", verdict["summary"])
    return verdict


def _conformal(cfg: PipelineConfig, y_true: Any, chall: dict) -> dict[str, Any] | None:
    """Split-conformal calibration and measured coverage on the holdout (:mod:`airloop.model.conformal`);
    None for a classifier without probabilities."""
    from airloop.model.conformal import calibrate_and_measure

    if cfg.task == "classification" and chall.get("y_proba") is None:
        return None
    return calibrate_and_measure(cfg.task, y_true, chall, cfg.evaluation.coverage, cfg.training.seed)


def _baseline(
    cfg: PipelineConfig, metric: str, train_uri: str | None, y_true: Any, chall: dict
) -> dict[str, Any] | None:
    """The trivial baseline (:mod:`airloop.model.baseline`) on the holdout: {"kind", "value", "improvement",
    "ci", "lower_bound", "interval_90", "_cmp"}; fitted on the training labels (the holdout's when the run has
    no train URI). None when the metric is undefined for the baseline."""
    y_fit = y_true
    if train_uri:
        train = lake.read_parquet(train_uri)
        if cfg.target in train.columns:
            y_fit = train[cfg.target].dropna().to_numpy()
    base = baseline_scored(cfg.task, y_fit, len(y_true), chall.get("classes"))
    got = compute_metrics(cfg.task, y_true, base["y_pred"], base["y_proba"], classes=base["classes"], only=[metric])
    if metric not in got or math.isnan(got[metric]):
        return None
    cmp = compare(cfg, metric, y_true, chall, base)
    return {
        "kind": baseline_kind(cfg.task),
        "value": got[metric],
        "improvement": cmp["improvement"],
        "ci": cmp["ci"],
        "lower_bound": cmp["bounds"][0] if cmp["bounds"] else None,
        "interval_90": cmp["bounds"],
        "_cmp": cmp,
    }


def require_blessed(verdict: dict[str, Any]) -> str:
    """The registered version of a blessed verdict; NothingToDo (the DAG skips) when it was rejected."""
    if verdict.get("blessed") and verdict.get("version"):
        return str(verdict["version"])
    reasons = "; ".join(r for r in verdict.get("reasons", []) if r.startswith("FAIL"))
    raise NothingToDo(f"run {verdict.get('run_id')} was rejected by the gate: {reasons or 'no version'}")
