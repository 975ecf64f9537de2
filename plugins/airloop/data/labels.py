"""Reviewed labels as training data: the review queue and reviewers' labels, read back from the lake.

:mod:`airloop.serving.review` writes low-confidence served predictions to the review queue and reviewers'
labels next to them. :func:`reviewed_rows` joins the two into labeled training rows, which
:func:`airloop.data.datasets.labeled_frame` adds to the batches whose dates they fall in.
"""

from __future__ import annotations

import json

import pandas as pd

from airloop.config import PipelineConfig
from airloop.store import lake as lk
from airloop.store.lake import BATCH_COLUMN, REVIEW_LABELS_ZONE, REVIEW_QUEUE_ZONE, Lake


def _read(lake: Lake, zone: str) -> pd.DataFrame:
    frames = [lk.read_parquet(u) for d in lake.batches(zone) for u in lk.list_uris(lake.partition(zone, d))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def review_queue(lake: Lake) -> pd.DataFrame:
    """Every queued item (reviewed or not)."""
    return _read(lake, REVIEW_QUEUE_ZONE)


def review_labels(lake: Lake) -> pd.DataFrame:
    """Every submitted review label; the latest per prediction id wins."""
    frame = _read(lake, REVIEW_LABELS_ZONE)
    return frame.drop_duplicates("prediction_id", keep="last") if not frame.empty else frame


def reviewed_rows(cfg: PipelineConfig, lake: Lake, days: tuple[str, str] | None = None) -> pd.DataFrame:
    """Reviewed items as labeled training rows: the features as served, the reviewer's target, the id column
    (the client's id, else the prediction id), the event time (when it was served) and ``_batch_id``
    ``review:<day>``. ``days`` = (first, last) keeps items served in that range of dates."""
    items, done = review_queue(lake), review_labels(lake)
    if items.empty or done.empty:
        return pd.DataFrame()
    items = items.drop_duplicates("prediction_id", keep="last").merge(
        done[["prediction_id", cfg.target, "reviewer"]], on="prediction_id", how="inner"
    )
    day = items["served_at"].str[:10]
    if days is not None:
        items, day = items[(day >= days[0]) & (day <= days[1])], day[(day >= days[0]) & (day <= days[1])]
    if items.empty:
        return pd.DataFrame()
    out = pd.DataFrame([json.loads(f) for f in items["features"]])
    target = pd.to_numeric(items[cfg.target], errors="coerce") if cfg.task == "regression" else items[cfg.target]
    if cfg.task == "classification":
        as_num = pd.to_numeric(items[cfg.target], errors="coerce")
        target = as_num if as_num.notna().all() else items[cfg.target]
    out[cfg.target] = target.to_numpy()
    if cfg.id_column:
        ids = items["entity_id"] if "entity_id" in items.columns else pd.Series([None] * len(items))
        out[cfg.id_column] = ids.where(ids.notna(), items["prediction_id"]).to_numpy()
    if cfg.event_time_column:
        out[cfg.event_time_column] = pd.to_datetime(items["served_at"].to_numpy(), utc=True).tz_convert(None)
    out[BATCH_COLUMN] = ("review:" + day).to_numpy()
    out["_prediction_id"] = items["prediction_id"].to_numpy()
    return out
