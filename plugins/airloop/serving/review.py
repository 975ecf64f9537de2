"""The review queue: low-confidence served predictions go to people, and their labels come back as training data.

The server writes every prediction whose probability is below ``serving.low_confidence_threshold`` to
``review/date=<day>/part-*.parquet`` (with its features). Reviewers export the pending items
(``airloop review NAME --export pending.csv``), fill in the target column, and submit the file
(``airloop review NAME --labels done.csv --reviewer ana``), which lands in ``review_labels/date=<day>/``.
:func:`airloop.data.labels.reviewed_rows` turns reviewed items into labeled training rows, and
:func:`airloop.data.datasets.labeled_frame` adds them to the training data of the batches whose dates they fall in.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pandas as pd

from airloop.config import PipelineConfig
from airloop.data.labels import review_labels, review_queue
from airloop.errors import BadInput
from airloop.store import lake as lk
from airloop.store.lake import REVIEW_LABELS_ZONE, REVIEW_QUEUE_ZONE, Lake

QUEUE_COLUMNS = ["prediction_id", "served_at", "model_version", "prediction", "probability", "entity_id", "features"]


class ReviewError(BadInput):
    """Reviewed labels that cannot be used; the message names the column or the prediction ids."""


def _write(lake: Lake, zone: str, day: str, frame: pd.DataFrame) -> str:
    name = f"part-{dt.datetime.now(dt.UTC).strftime('%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    return lk.write_parquet(lk.join(lake.partition(zone, day), name), frame)


def enqueue(cfg: PipelineConfig, lake: Lake, predictions: pd.DataFrame) -> str | None:
    """Add served predictions (rows of the serving log) to the queue; returns the URI written (None if empty)."""
    if predictions.empty:
        return None
    rows = predictions[[c for c in QUEUE_COLUMNS if c in predictions.columns]].copy()
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
