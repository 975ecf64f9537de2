"""Batch scoring: score a validated batch with the current champion and write predictions to the lake.

Each prediction row carries a prediction id, the model version, the batch id and a timestamp, so any
prediction can be traced back to the model, its training run and its data; and, when the gate calibrated the
version, its conformal prediction set (``prediction_set``, ``set_size``) or interval (``interval_low``,
``interval_high``), as online serving answers.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo
from airloop.store import lake as lk
from airloop.store import models
from airloop.store.lake import BATCH_COLUMN, Lake


class AlreadyScored(NothingToDo):
    """The champion has already scored this batch; its predictions are immutable, so there is nothing to do."""


class NoChampion(NothingToDo):
    """There is no champion to score with yet."""


def champion_and_batch(cfg: PipelineConfig, lake: Lake, batch_id: str, stage: str, none_yet: str):
    """(the champion's ModelVersion, the URI of ``validated/date=batch_id``) for ``stage``; LakeError when the
    batch was never validated, NoChampion (with ``none_yet`` as the reason) when no version is champion."""
    from airloop.store import registry, tracking

    batch_uri = lake.require_part("validated", batch_id, stage)
    tracking.configure_mlflow()
    champion = registry.get_version(cfg, "champion")
    if champion is None:
        raise NoChampion(f"pipeline {cfg.name!r}: {none_yet}")
    return champion, batch_uri


SCORE_CHUNK_ROWS = 100_000  # rows per model call in batch scoring: bounds the preprocessed matrix in memory


def predict_frame(
    cfg: PipelineConfig,
    model,
    frame: pd.DataFrame,
    chunk_rows: int = SCORE_CHUNK_ROWS,
    conformal_threshold: float | None = None,
) -> pd.DataFrame:
    """Predictions for raw rows: ``prediction`` and, for classifiers, ``probability`` of the predicted class
    (``score``: probability of the positive class for binary problems). With the version's
    ``conformal_threshold``, also the columns of :func:`airloop.model.conformal.served_columns`.

    One model call per chunk of ``chunk_rows`` rows, so the preprocessed matrix of a large batch never sits in
    memory whole. A classifier's ``prediction`` is the class of highest probability, as online serving
    answers, from the same ``predict_proba`` call (no second pass through the model)."""
    with_proba = cfg.task == "classification" and hasattr(model, "predict_proba")
    preds, probas = [], []
    for start in range(0, max(len(frame), 1), chunk_rows):
        part = frame.iloc[start : start + chunk_rows]
        if with_proba:
            probas.append(np.asarray(model.predict_proba(part)))
        else:
            preds.append(np.asarray(model.predict(part)))
    from airloop.model.conformal import served_columns

    out = pd.DataFrame(index=frame.index)
    proba = None
    if with_proba:
        proba = np.concatenate(probas) if len(probas) > 1 else probas[0]
        best = proba.argmax(axis=1)
        out["prediction"] = np.asarray(model.classes_).take(best)
        out["probability"] = proba[np.arange(len(best)), best]
        if proba.shape[1] == 2:
            out["score"] = proba[:, 1]
    else:
        out["prediction"] = np.concatenate(preds) if len(preds) > 1 else preds[0]
    classes = getattr(model, "classes_", None)
    for key, values in served_columns(cfg.task, conformal_threshold, out["prediction"], proba, classes).items():
        out[key] = values
    return out


def prediction_ids(cfg: PipelineConfig, frame: pd.DataFrame, batch_id: str) -> pd.Series:
    """Stable ids: ``{pipeline}:{batch}:{id}`` with the id column, else the row number in the batch."""
    keys = (
        frame[cfg.id_column].astype(str)
        if cfg.id_column in frame.columns
        else pd.Series(np.arange(len(frame)).astype(str), index=frame.index)
    )
    return f"{cfg.name}:{batch_id}:" + keys


class ScoringInputRefused(BadInput):
    """A batch that does not match the model's signature or the pipeline's suite; nothing was scored."""


def check_inputs(cfg: PipelineConfig, frame: pd.DataFrame, model_uri: str, batch_id: str) -> dict:
    """Check rows about to be scored against the model signature (required columns present) and the GX suite
    (``validate.check_scoring_frame``). Returns {"signature_columns", "suite", "warnings"}; raises
    ScoringInputRefused naming the columns or the failed expectations."""
    import mlflow

    from airloop.data import validate

    signature = mlflow.models.get_model_info(model_uri).signature
    required = []
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        required = [s.name for s in signature.inputs.inputs if getattr(s, "required", True)]
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ScoringInputRefused(
                f"batch {batch_id} of {cfg.name!r}: columns {missing} required by the signature of {model_uri} "
                f"are missing (found {sorted(map(str, frame.columns))}); nothing was scored"
            )
    outcome = validate.check_scoring_frame(cfg, frame)
    if not outcome.success:
        failures = "\n".join(f"  - {validate.describe_failure(f, 'critical')}" for f in outcome.critical)
        raise ScoringInputRefused(
            f"batch {batch_id} of {cfg.name!r}: {len(outcome.critical)} critical expectation(s) of suite "
            f"{outcome.suite_name!r} failed on the rows to score; nothing was scored:\n{failures}"
        )
    return {"signature_columns": len(required), "suite": outcome.suite_name, "warnings": len(outcome.warnings)}


def score_batch(cfg: PipelineConfig, batch_id: str, *, lake: Lake | None = None, run_info: dict | None = None) -> dict:
    """Score ``validated/date=batch_id`` with the champion; returns {"batch_id","rows","model_version","uri",
    "checks","summary"}.

    The rows are first checked against the model signature and the suite (:func:`check_inputs`). Raises
    NoChampion when no version holds the alias ``champion``, AlreadyScored when the champion has scored the
    batch before. Each version's predictions go to their own file (:meth:`Lake.prediction_part`), never over
    another's.
    """

    from airloop.model.conformal import conformal_tags

    lake = lake or Lake(cfg.name)
    champion, validated_uri = champion_and_batch(
        cfg, lake, batch_id, "score", "no model version has the alias 'champion' yet"
    )
    out_uri = lake.prediction_part(batch_id, str(champion.version))
    if lk.exists(out_uri):
        raise AlreadyScored(
            f"pipeline {cfg.name!r}, batch {batch_id}: already scored by v{champion.version}; predictions are "
            "immutable (a new champion scores it beside the old predictions)"
        )
    # Pin the version read above: the alias may move while this batch is scored.
    model_uri = models.version_uri(cfg, champion.version)
    frame = lk.read_parquet(validated_uri)
    features = frame.drop(columns=[c for c in (cfg.target,) if c in frame.columns])
    checks = check_inputs(cfg, features, model_uri, batch_id)
    model = models.load_uri(model_uri)
    threshold, _ = conformal_tags(dict(champion.tags or {}))
    preds = predict_frame(cfg, model, features, conformal_threshold=threshold)
    keep = [c for c in (cfg.id_column, cfg.event_time_column) if c and c in frame.columns]
    out = pd.concat([frame[keep], preds], axis=1)
    out.insert(0, "prediction_id", prediction_ids(cfg, frame, batch_id))
    out["model_version"] = str(champion.version)
    out["model_run_id"] = champion.run_id
    out[BATCH_COLUMN] = batch_id
    out["scored_at"] = dt.datetime.now(dt.UTC).isoformat()
    info = run_info or {}
    out["airflow_dag_id"] = info.get("dag_id")
    out["airflow_run_id"] = info.get("run_id")
    uri = lk.write_parquet(out_uri, out)
    summary = (
        f"Scored {len(out)} rows of {batch_id} with {model_uri} (checked against its signature and suite "
        f"{checks['suite']!r}: {checks['warnings']} warning(s)); wrote {uri}"
    )
    return {
        "batch_id": batch_id,
        "rows": len(out),
        "model_version": str(champion.version),
        "uri": uri,
        "checks": checks,
        "summary": summary,
    }
