"""Suspect training labels: rows whose out-of-fold probability strongly contradicts their label (confident
learning, ``cleanlab.filter.find_label_issues``), sent to the review queue for people to confirm or fix.

Each training row is scored by a copy of the challenger that did not train on it (``cv_folds``-fold
cross-validated ``predict_proba``); cleanlab's default rule (``prune_by_noise_rate``) flags the rows its
estimated noise rates say are most likely mislabeled. Flagged rows join the review queue
(:mod:`airloop.serving.review`) with ``prediction_id`` ``suspect-<id>``, the out-of-fold prediction and the
probability of the given label; a reviewer's answer flows back through ``airloop review`` and replaces the
row's label in later trainings (:func:`airloop.data.datasets.labeled_frame`: a reviewed item replaces the
row with the same id).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from airloop.config import PipelineConfig
from airloop.store.lake import BATCH_COLUMN
from airloop.values import plain

MAX_SUSPECTS = 500  # a review queue people can get through


def out_of_fold_proba(model: Any, X: pd.DataFrame, y: pd.Series, folds: int, seed: int) -> np.ndarray:
    """(rows, classes) probabilities, each row scored by a copy of ``model`` (refitted) that did not see it;
    columns in sorted class order."""
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(clone(model), X, y, cv=cv, method="predict_proba", n_jobs=1)


def find_suspects(y: Any, proba: np.ndarray) -> np.ndarray:
    """Positions of suspect labels, most suspect first (cleanlab's confident learning, default threshold)."""
    from cleanlab.filter import find_label_issues

    classes = np.unique(np.asarray(y))
    labels = np.searchsorted(classes, np.asarray(y))
    return find_label_issues(labels, proba, return_indices_ranked_by="self_confidence", n_jobs=1)


def _row_id(cfg: PipelineConfig, row: pd.Series, features: list[str]) -> str:
    if cfg.id_column and cfg.id_column in row.index and pd.notna(row[cfg.id_column]):
        return str(row[cfg.id_column])
    payload = json.dumps({c: plain(row[c]) for c in features}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _when(cfg: PipelineConfig, row: pd.Series) -> str:
    """The row's date (event time, else its batch), so a reviewed label lands in the trainings that use it."""
    for col in (cfg.event_time_column, BATCH_COLUMN):
        if col and col in row.index and pd.notna(row[col]):
            stamp = pd.to_datetime(row[col], errors="coerce", utc=True)
            if pd.notna(stamp):
                return stamp.isoformat()
    return dt.datetime.now(dt.UTC).isoformat()


def queue_rows(
    cfg: PipelineConfig, train: pd.DataFrame, features: list[str], positions: np.ndarray, proba: np.ndarray, tag: str
) -> pd.DataFrame:
    """Review-queue rows (:data:`airloop.serving.review.QUEUE_COLUMNS`, ``reason`` included) for the suspect
    positions."""
    classes = np.unique(train[cfg.target].to_numpy())
    out = []
    for pos in positions[:MAX_SUSPECTS]:
        row = train.iloc[int(pos)]
        given = row[cfg.target]
        p_given = float(proba[pos, int(np.searchsorted(classes, given))])
        predicted = plain(classes[int(np.argmax(proba[pos]))])
        rid = _row_id(cfg, row, features)
        out.append(
            {
                "prediction_id": f"suspect-{rid}",
                "served_at": _when(cfg, row),
                "model_version": tag,
                "prediction": json.dumps(predicted),
                "probability": p_given,
                "entity_id": str(row[cfg.id_column]) if cfg.id_column and cfg.id_column in row.index else None,
                "features": json.dumps({c: plain(row[c]) for c in features}, default=str),
                "reason": f"suspect label: given {plain(given)!r}, out-of-fold p(given) {p_given:.3f}, "
                f"model says {predicted!r}",
            }
        )
    return pd.DataFrame(out)


def review_suspects(cfg: PipelineConfig, model: Any, train: pd.DataFrame, run_id: str) -> dict[str, Any]:
    """Find suspect labels in ``train`` with the challenger ``model`` and add the new ones to the review queue.

    Returns {"rows" (training rows checked), "suspects" (found), "queued" (new in the queue), "uri"} or
    {"skipped": why} (regression, or too few rows per class for the folds)."""
    from airloop.data.labels import review_queue
    from airloop.serving.review import enqueue
    from airloop.store.lake import Lake

    if cfg.task != "classification":
        return {"skipped": "suspect labels are found for classification only"}
    train = train[train[cfg.target].notna()].reset_index(drop=True)
    features = list(getattr(model, "feature_names_in_", [c for c in train.columns if c != cfg.target]))
    counts = train[cfg.target].value_counts()
    if len(counts) < 2 or counts.min() < cfg.training.cv_folds:
        return {"skipped": f"too few rows per class for {cfg.training.cv_folds}-fold out-of-fold probabilities"}
    proba = out_of_fold_proba(model, train[features], train[cfg.target], cfg.training.cv_folds, cfg.training.seed)
    positions = find_suspects(train[cfg.target].to_numpy(), proba)
    rows = queue_rows(cfg, train, features, positions, proba, f"suspect-labels:run {run_id}")
    lake = Lake(cfg.name)
    queued = review_queue(lake)
    if not rows.empty and not queued.empty:
        rows = rows[~rows["prediction_id"].isin(queued["prediction_id"])]
    uri = enqueue(cfg, lake, rows) if not rows.empty else None
    return {"rows": len(train), "suspects": int(len(positions)), "queued": int(len(rows)), "uri": uri}
