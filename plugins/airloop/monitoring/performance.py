"""The champion's performance in production: estimated before the labels arrive, realized after, and the
retrain decision on impact.

- ``estimate_for_champion``: the batch's estimated primary metric (CBPE or DLE, :mod:`.estimate`), overall
  and per segment, with the champion's own calibration map and holdout value.
- ``realized_by_batch``: the realized metric of each scored batch whose labels have arrived, overall and per
  segment, so each day's estimate can be set beside its realized value (and the estimation error tracked).
- ``retrain_decision``: whether today starts a retrain under ``retrain.trigger`` ("drift",
  "estimated_performance" or "both"), and why.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from airloop.config import PipelineConfig
from airloop.store import lake as lk
from airloop.store.lake import Lake

log = logging.getLogger(__name__)


def estimate_for_champion(
    cfg: PipelineConfig, run: Any, model: Any, current: pd.DataFrame, cur_pred: pd.DataFrame
) -> dict | None:
    """The estimated primary metric of ``current`` (features) scored as ``cur_pred`` by the champion
    (trained in MLflow ``run``); None when it cannot be estimated (multiclass, a metric not covered)."""
    from airloop.model.calibration import fit_calibration, load_calibration
    from airloop.monitoring.estimate import ESTIMATED, LossModel, estimate_batch

    metric = cfg.primary_metric
    if metric not in ESTIMATED[cfg.task]:
        return None
    reference_value = run.data.metrics.get(f"test_{metric}")
    segments = list(cfg.segment_columns)
    if cfg.task == "classification":
        if "score" not in cur_pred.columns:
            return None
        classes = getattr(model, "classes_", None)
        calibration = load_calibration(run.info.run_id)
        if calibration is None:  # a champion trained before calibration: fit the map on its holdout now
            holdout = holdout_of(cfg, run)
            if holdout is not None and classes is not None:
                score = model.predict_proba(holdout.drop(columns=[cfg.target]))[:, 1]
                calibration = fit_calibration(holdout[cfg.target].to_numpy() == classes[1], score)
        pred_pos = (cur_pred["prediction"].to_numpy() == classes[1]) if classes is not None else None
        return estimate_batch(
            cfg.task,
            metric,
            current,
            segments,
            score=cur_pred["score"].to_numpy(),
            pred_pos=pred_pos,
            calibration=calibration,
            reference_value=reference_value,
            seed=cfg.training.seed,
        )
    holdout = holdout_of(cfg, run)
    if holdout is None:
        return None
    loss_model = LossModel(model, holdout, cfg.target, seed=cfg.training.seed)
    return estimate_batch(cfg.task, metric, current, segments, loss_model=loss_model, reference_value=reference_value)


def holdout_of(cfg: PipelineConfig, run: Any) -> pd.DataFrame | None:
    """The labeled frozen holdout of the training ``run`` (its ``airloop.test_uri``), or None."""
    uri = run.data.tags.get("airloop.test_uri")
    if not uri or not lk.exists(uri):
        return None
    frame = lk.read_parquet(uri)
    return frame[frame[cfg.target].notna()] if cfg.target in frame.columns else None


def realized_by_batch(cfg: PipelineConfig, lake: Lake, model_version: str) -> dict[str, dict]:
    """{batch: {"value", "rows", "segments": {"column=value": value}}} of the primary metric per scored batch
    of this champion whose labels have arrived (at least MIN_SLICE_ROWS labeled rows, both classes)."""
    from airloop.data.datasets import attach_labels
    from airloop.model.gate import MIN_SLICE_ROWS, segment_labels
    from airloop.model.metrics import compute_metrics

    if cfg.id_column is None:
        return {}
    labels = lake.read_zone("labels")
    if labels.empty:
        return {}
    out: dict[str, dict] = {}
    for batch in lake.batches("predictions"):
        preds = lake.read_zone("predictions", [batch])  # every model version's file of the batch
        if "model_version" in preds.columns:
            preds = preds[preds["model_version"].astype(str) == str(model_version)]
        joined = attach_labels(cfg, preds, labels)
        if cfg.target not in joined.columns:
            continue
        joined = joined[joined[cfg.target].notna()]

        def metric_of(rows: pd.DataFrame) -> float | None:
            if len(rows) < MIN_SLICE_ROWS or (cfg.task == "classification" and rows[cfg.target].nunique() < 2):
                return None
            proba = rows["score"].to_numpy() if "score" in rows.columns else None
            got = compute_metrics(cfg.task, rows[cfg.target].to_numpy(), rows["prediction"].to_numpy(), proba)
            return got.get(cfg.primary_metric)

        value = metric_of(joined)
        if value is None:
            continue
        entry: dict[str, Any] = {"value": value, "rows": len(joined), "segments": {}}
        validated_uri = lake.part("validated", batch)
        if cfg.segment_columns and lk.exists(validated_uri):
            features = lk.read_parquet(validated_uri)
            present = [c for c in cfg.segment_columns if c in features.columns]
            if present and cfg.id_column in features.columns:
                features = features.drop_duplicates(cfg.id_column).set_index(cfg.id_column)
                for column in present:
                    seg = joined[cfg.id_column].map(features[column]).rename(column).to_frame()
                    labels_of = segment_labels(seg, column)
                    for value_ in sorted(set(labels_of)):
                        got = metric_of(joined[(labels_of == value_).to_numpy()])
                        if got is not None:
                            entry["segments"][f"{column}={value_}"] = got
        out[batch] = entry
    return out


def estimation_track(verdicts: list[dict], realized: dict[str, dict]) -> list[dict]:
    """Per monitored batch: the estimate made before its labels, and the realized value once they arrived.

    ``verdicts`` are earlier and today's verdicts of one champion, oldest first. Each entry: {"batch_id",
    "estimate", "lower", "upper", "realized", "error" (realized - estimate), "rows"}.
    """
    track = []
    for v in verdicts:
        est = v.get("estimate") or {}
        if est.get("value") is None:
            continue
        real = realized.get(v["batch_id"], {})
        value = real.get("value")
        track.append(
            {
                "batch_id": v["batch_id"],
                "estimate": round(est["value"], 5),
                "lower": None if est.get("lower") is None else round(est["lower"], 5),
                "upper": None if est.get("upper") is None else round(est["upper"], 5),
                "realized": None if value is None else round(value, 5),
                "error": None if value is None else round(value - est["value"], 5),
                "rows": real.get("rows"),
            }
        )
    return track


def estimate_floor(cfg: PipelineConfig, reference_value: float | None) -> float | None:
    """The value the estimate must not cross: evaluation.min_value, or the champion's holdout value minus
    retrain.estimate_tolerance (plus, for lower-is-better metrics), whichever is stricter."""
    from airloop.model.metrics import greater_is_better

    higher = greater_is_better(cfg.primary_metric)
    tol = cfg.retrain.estimate_tolerance
    limits = [cfg.evaluation.min_value]
    if reference_value is not None:
        limits.append(reference_value - tol if higher else reference_value + tol)
    limits = [x for x in limits if x is not None]
    if not limits:
        return None
    return max(limits) if higher else min(limits)


def estimate_below(cfg: PipelineConfig, estimate: dict | None) -> bool:
    """True when the estimate (or, with retrain.estimate_bound "lower_bound", the pessimistic end of its
    band) is worse than :func:`estimate_floor`."""
    from airloop.model.metrics import greater_is_better

    if not estimate or estimate.get("value") is None:
        return False
    floor = estimate_floor(cfg, estimate.get("reference_value"))
    if floor is None:
        return False
    higher = greater_is_better(cfg.primary_metric)
    value = estimate["value"]
    if cfg.retrain.estimate_bound == "lower_bound":
        bound = estimate.get("lower") if higher else estimate.get("upper")
        value = value if bound is None else bound
    return value < floor if higher else value > floor


def retrain_decision(cfg: PipelineConfig, drift_confirmed: bool, below_history: list[bool]) -> dict:
    """Today's retrain decision. ``below_history``: :func:`estimate_below` of the earlier days monitored
    against this champion and today, oldest first. Returns {"retrain", "trigger", "drift_confirmed",
    "estimate_confirmed", "reason"}."""
    days = cfg.monitoring.confirm_days
    recent = below_history[-days:]
    estimate_confirmed = len(recent) == days and all(recent)
    trigger = cfg.retrain.trigger
    by_drift = drift_confirmed and trigger in ("drift", "both")
    by_estimate = estimate_confirmed and trigger in ("estimated_performance", "both")
    if by_estimate:
        reason = f"estimated {cfg.primary_metric} below its floor on {days} day(s) in a row"
    elif by_drift:
        reason = "drift confirmed"
    elif drift_confirmed:
        reason = f"drift confirmed, but retrain.trigger is {trigger!r} and the estimated performance holds"
    elif estimate_confirmed:
        reason = f"estimated {cfg.primary_metric} below its floor, but retrain.trigger is {trigger!r}"
    else:
        reason = "no trigger: " + ("drift not confirmed" if trigger == "drift" else "estimate holds")
    return {
        "retrain": by_drift or by_estimate,
        "trigger": trigger,
        "drift_confirmed": drift_confirmed,
        "estimate_confirmed": estimate_confirmed,
        "reason": reason,
    }


def impact_text(cfg: PipelineConfig, drifted: list[str], estimate: dict | None) -> str:
    """One line: which features changed, and whether that matters for the model (by the estimate)."""
    changed = ", ".join(drifted[:6]) or "no feature"
    if not estimate or estimate.get("value") is None:
        return f"changed: {changed}; impact unknown (no performance estimate for this model)"
    floor = estimate_floor(cfg, estimate.get("reference_value"))
    ref = estimate.get("reference_value")
    head = f"changed: {changed}; estimated {cfg.primary_metric} {estimate['value']:.4f}"
    if ref is not None:
        head += f" (holdout {ref:.4f})"
    if floor is None:
        return head + "; no floor set (evaluation.min_value), impact not judged"
    if estimate_below(cfg, estimate):
        return head + f": below the floor {floor:.4f}, the change MATTERS"
    return head + f": above the floor {floor:.4f}, the change does not hurt the model"


def segment_rows(estimate: dict | None, realized: dict | None) -> list[list[Any]]:
    """[segment, rows, estimate, realized] rows for reports; realized None until labels arrive."""
    rows = []
    for s in (estimate or {}).get("segments", []):
        key = f"{s['column']}={s['value']}"
        real = ((realized or {}).get("segments") or {}).get(key)
        rows.append([key, s["rows"], s["estimate"], real])
    return rows


def as_floats(values: dict[str, Any]) -> dict[str, float]:
    """The finite numeric values of a dict, as floats (for MLflow metrics)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and np.isfinite(v)}
