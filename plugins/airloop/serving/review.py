"""The review queue: uncertain served predictions go to people, and their labels come back as training data.

What is uncertain is ``serving.review_by`` (:func:`review_flags`): a probability below
``serving.low_confidence_threshold`` (``probability``, the default), a conformal prediction set of more than
``serving.review_max_set_size`` classes (``set_size``), or a conformal interval wider than
``serving.review_max_interval_width`` (``interval_width``). The server writes every flagged prediction to
``review/date=<day>/part-*.parquet`` with its features and the reason it was flagged (suspect training labels
from :mod:`airloop.model.suspects` join the same queue with theirs). Reviewers export the pending items
(``airloop review NAME --export pending.csv``), fill in the target column, and submit the file
(``airloop review NAME --labels done.csv --reviewer ana``), which lands in ``review_labels/date=<day>/``.
:func:`airloop.data.labels.reviewed_rows` turns reviewed items into labeled training rows, and
:func:`airloop.data.datasets.labeled_frame` adds them to the training data of the batches whose dates they fall in.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import numpy as np
import pandas as pd

from airloop.config import PipelineConfig
from airloop.data.labels import review_labels, review_queue
from airloop.errors import BadInput
from airloop.store import lake as lk
from airloop.store.lake import REVIEW_LABELS_ZONE, REVIEW_QUEUE_ZONE, Lake
from airloop.values import plain

QUEUE_COLUMNS = [
    "prediction_id",
    "served_at",
    "model_version",
    "prediction",
    "probability",
    "entity_id",
    "features",
    "reason",
]


class ReviewError(BadInput):
    """Reviewed labels that cannot be used; the message names the column or the prediction ids."""


def _write(lake: Lake, zone: str, day: str, frame: pd.DataFrame) -> str:
    name = f"part-{dt.datetime.now(dt.UTC).strftime('%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    return lk.write_parquet(lk.join(lake.partition(zone, day), name), frame)


def review_flags(cfg: PipelineConfig, probability: np.ndarray | None, served: dict[str, list], rows: int) -> list[bool]:
    """Per row, whether it goes to review under ``serving.review_by``. ``served`` holds the conformal columns
    of :func:`airloop.model.conformal.served_columns` (empty for a version the gate did not calibrate: then
    the probability rule applies, when ``low_confidence_threshold`` is set). One comparison per row."""
    s = cfg.serving
    if s.review_by == "set_size" and "set_size" in served:
        return [size > s.review_max_set_size for size in served["set_size"]]
    if s.review_by == "interval_width" and "interval_low" in served and s.review_max_interval_width is not None:
        # Split conformal gives every row of a version the same width: this flags all of them or none
        limit = s.review_max_interval_width
        return [high - low > limit for low, high in zip(served["interval_low"], served["interval_high"], strict=True)]
    if probability is not None and s.low_confidence_threshold is not None:
        return (np.asarray(probability, dtype=float) < s.low_confidence_threshold).tolist()
    return [False] * rows


def review_reasons(cfg: PipelineConfig, rows: pd.DataFrame) -> list[str]:
    """Why each flagged served row (serving-log columns) went to review, in words naming the rule's key."""
    s = cfg.serving
    out = []
    for row in rows.to_dict("records"):
        size, low, high = row.get("set_size"), row.get("interval_low"), row.get("interval_high")
        if s.review_by == "set_size" and size is not None and size == size:
            shown = json.dumps([plain(v) for v in row["prediction_set"]], default=str)
            out.append(
                f"ambiguous: prediction set {shown} has {int(size)} classes, more than "
                f"serving.review_max_set_size {s.review_max_set_size}"
            )
        elif s.review_by == "interval_width" and low is not None and high is not None and low == low:
            out.append(
                f"uncertain: interval [{low:.4g}, {high:.4g}] is {high - low:.4g} wide, more than "
                f"serving.review_max_interval_width {s.review_max_interval_width:g}"
            )
        else:
            p = row.get("probability")
            shown = f"{p:.3f}" if isinstance(p, float) else str(p)
            out.append(
                f"low confidence: probability {shown} below serving.low_confidence_threshold "
                f"{s.low_confidence_threshold}"
            )
    return out


def enqueue(cfg: PipelineConfig, lake: Lake, predictions: pd.DataFrame) -> str | None:
    """Add flagged predictions (rows of the serving log, or suspect labels with their ``reason``) to the queue;
    served rows without a reason get :func:`review_reasons`. Returns the URI written (None if empty)."""
    if predictions.empty:
        return None
    rows = predictions[[c for c in QUEUE_COLUMNS if c in predictions.columns]].copy()
    if "reason" not in rows.columns:
        rows["reason"] = review_reasons(cfg, predictions)
    rows["queued_at"] = dt.datetime.now(dt.UTC).isoformat()
    return _write(lake, REVIEW_QUEUE_ZONE, str(rows["served_at"].iloc[0])[:10], rows)


def pending(cfg: PipelineConfig, lake: Lake) -> pd.DataFrame:
    """Queued items without a label yet, one column per feature plus an empty target column to fill in."""
    items = review_queue(lake)
    if items.empty:
        return items
    done = review_labels(lake)
    if not done.empty:
        items = items[~items["prediction_id"].isin(done["prediction_id"])]
    features = pd.DataFrame([json.loads(f) for f in items["features"]], index=items.index)
    out = pd.concat([items.drop(columns=["features"]), features], axis=1)
    out[cfg.target] = None
    return out.reset_index(drop=True)


def submit_labels(cfg: PipelineConfig, lake: Lake, reviewed: pd.DataFrame, reviewer: str) -> dict:
    """Record reviewers' labels: ``reviewed`` needs ``prediction_id`` and the target column; rows with an
    empty target are left pending. Returns {"rows", "uri"}; raises ReviewError naming what is wrong."""
    missing = [c for c in ("prediction_id", cfg.target) if c not in reviewed.columns]
    if missing:
        raise ReviewError(
            f"reviewed labels for {cfg.name!r}: expected columns ['prediction_id', {cfg.target!r}], "
            f"missing {missing} (found {sorted(map(str, reviewed.columns))})"
        )
    if not reviewer.strip():
        raise ReviewError("reviewed labels: expected a reviewer name, found an empty one")
    rows = reviewed[["prediction_id", cfg.target]].copy()
    rows = rows[rows[cfg.target].notna() & (rows[cfg.target].astype(str).str.strip() != "")]
    if rows.empty:
        return {"rows": 0, "uri": None}
    known = set(review_queue(lake).get("prediction_id", pd.Series(dtype=str)))
    unknown = sorted(set(rows["prediction_id"]) - known)
    if unknown:
        raise ReviewError(f"reviewed labels: prediction ids not in the review queue of {cfg.name!r}: {unknown[:5]}")
    rows["reviewer"] = reviewer
    rows["reviewed_at"] = dt.datetime.now(dt.UTC).isoformat()
    uri = _write(lake, REVIEW_LABELS_ZONE, rows["reviewed_at"].iloc[0][:10], rows)
    return {"rows": len(rows), "uri": uri}
