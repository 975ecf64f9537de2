"""Assembling frames from the lake: feature columns, and labeled training data joined from the labels feed.

Columns whose names start with ``_`` (``_batch_id``) are Airloop's bookkeeping, never features.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from airloop.config import PipelineConfig
from airloop.data.labels import reviewed_rows
from airloop.errors import BadInput
from airloop.store.lake import Lake


class DatasetError(BadInput):
    """Data that cannot be used for training or scoring; the message names the column."""


def feature_columns(cfg: PipelineConfig, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The (numeric, categorical) feature columns: declared in the YAML, else inferred from the frame."""
    reserved = {cfg.target, cfg.id_column, cfg.event_time_column}
    if cfg.features:
        missing = [c for c in cfg.features if c not in frame.columns]
        if missing:
            raise DatasetError(
                f"feature columns {missing} declared in {cfg.source_file or cfg.name} are not in the data "
                f"(found columns: {sorted(map(str, frame.columns))})"
            )
        features = list(cfg.features)
    else:
        features = [c for c in frame.columns if c not in reserved and not str(c).startswith("_")]
    if not features:
        raise DatasetError(f"pipeline {cfg.name!r}: no feature columns left besides target, id and event time")
    declared_cat = set(cfg.categorical_features or [])
    numeric, categorical = [], []
    for col in features:
        if col in declared_cat:
            categorical.append(col)
        elif pd.api.types.is_bool_dtype(frame[col]) or not pd.api.types.is_numeric_dtype(frame[col]):
            categorical.append(col)
        else:
            numeric.append(col)
    return numeric, categorical


def fingerprint(frame: pd.DataFrame) -> str:
    """A stable sha256 of a frame's content and column names, independent of row order."""
    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).sort_values()
    digest = hashlib.sha256()
    digest.update("|".join(map(str, frame.columns)).encode())
    digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()


def attach_labels(cfg: PipelineConfig, frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Fill the target from the labels feed (joined on the id column); inline targets win."""
    if labels.empty or cfg.id_column is None:
        return frame
    if cfg.id_column not in labels.columns or cfg.target not in labels.columns:
        raise DatasetError(
            f"labels feed of {cfg.name!r}: expected columns {cfg.id_column!r} and {cfg.target!r}, "
            f"found {sorted(map(str, labels.columns))}"
        )
    latest = labels.drop_duplicates(subset=[cfg.id_column], keep="last").set_index(cfg.id_column)[cfg.target]
    joined = frame[cfg.id_column].map(latest)
    out = frame.copy()
    if cfg.target in out.columns:
        out[cfg.target] = out[cfg.target].where(out[cfg.target].notna(), joined)
    else:
        out[cfg.target] = joined
    return out


def with_reviewed(cfg: PipelineConfig, lake: Lake, labeled: pd.DataFrame, batch_ids: list[str]) -> pd.DataFrame:
    """``labeled`` plus the review queue's labeled items served within the batches' dates (airloop.data.labels);
    a reviewed item replaces a row with the same id, since a person's label is the better one."""
    dates = sorted(b for b in batch_ids if isinstance(b, str))
    reviewed = reviewed_rows(cfg, lake, (dates[0], dates[-1])) if dates else pd.DataFrame()
    if reviewed.empty:
        return labeled.reset_index(drop=True)
    if cfg.id_column and cfg.id_column in labeled.columns:
        labeled = labeled[~labeled[cfg.id_column].isin(reviewed[cfg.id_column])]
    if cfg.target in labeled.columns and pd.api.types.is_integer_dtype(labeled[cfg.target]):
        as_num = pd.to_numeric(reviewed[cfg.target], errors="coerce")
        if as_num.notna().all() and (as_num % 1 == 0).all():  # keep 0/1 labels integers, not 0.0/1.0
            reviewed = reviewed.assign(**{cfg.target: as_num.astype(labeled[cfg.target].dtype)})
    return pd.concat([labeled, reviewed], ignore_index=True)


def labeled_frame(cfg: PipelineConfig, lake: Lake, batch_ids: list[str]) -> pd.DataFrame:
    """Validated rows of the given batches that have a label (inline, from the labels feed, or from the review
    queue for items served on those dates)."""
    frame = lake.read_zone("validated", batch_ids)
    if frame.empty:
        raise DatasetError(f"pipeline {cfg.name!r}: no validated data in batches {batch_ids}")
    frame = attach_labels(cfg, frame, lake.read_zone("labels"))
    if cfg.target not in frame.columns:
        raise DatasetError(
            f"pipeline {cfg.name!r}: target column {cfg.target!r} is neither in the validated data nor in a "
            f"labels feed (found columns: {sorted(map(str, frame.columns))})"
        )
    labeled = with_reviewed(cfg, lake, frame[frame[cfg.target].notna()], batch_ids)
    if labeled.empty:
        raise DatasetError(f"pipeline {cfg.name!r}: no labeled rows yet in batches {batch_ids}")
    return labeled
