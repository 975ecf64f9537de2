"""Metrics: which metrics each task reports and in which direction, computing them on predictions, and the
scikit-learn scorer a search optimises."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    make_scorer,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from airloop.errors import BadInput
from airloop.model.directions import METRIC_DIRECTIONS, greater_is_better  # noqa: F401 - one place, re-exported

log = logging.getLogger(__name__)

TASK_METRICS = {
    "classification": ("roc_auc", "pr_auc", "f1", "log_loss", "brier", "accuracy"),
    "regression": ("rmse", "mae", "r2"),
}


def check_metric(task: str, metric: str) -> None:
    """BadInput unless ``metric`` is computed for ``task`` (e.g. rmse is not a classification metric)."""
    if metric not in TASK_METRICS[task]:
        raise BadInput(
            f"evaluation.primary_metric: expected one of {list(TASK_METRICS[task])} for {task}, found {metric!r}"
        )


def compute_metrics(
    task: str,
    y_true: Any,
    y_pred: Any,
    y_proba: Any = None,
    *,
    classes: Any = None,
    only: Collection[str] | None = None,
) -> dict[str, float]:
    """Test metrics of one set of predictions (``only``: just these, e.g. inside a bootstrap loop).

    Classification: roc_auc (binary; macro one-vs-rest for multiclass), pr_auc (binary), f1 (binary on the
    second class; macro for multiclass), log_loss, brier (binary: mean squared error of the positive-class
    probability, the calibration metric), accuracy. ``y_proba`` columns follow ``classes``
    (the model's ``classes_``; default: the sorted labels of ``y_true``); a 1-D ``y_proba`` is the
    probability of the second class of a binary problem. Regression: rmse, mae, r2.
    A metric that is undefined on this data (one class only in ``y_true``) is left out.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    wanted = set(TASK_METRICS[task] if only is None else only)
    out: dict[str, float] = {}
    if task == "regression":
        if "rmse" in wanted:
            out["rmse"] = float(math.sqrt(mean_squared_error(y_true, y_pred)))
        if "mae" in wanted:
            out["mae"] = float(mean_absolute_error(y_true, y_pred))
        if "r2" in wanted and len(y_true) > 1:
            out["r2"] = float(r2_score(y_true, y_pred))
        return out
    classes = np.asarray(classes) if classes is not None else np.unique(y_true)
    binary = len(classes) == 2
    if "accuracy" in wanted:
        out["accuracy"] = float(accuracy_score(y_true, y_pred))
    if "f1" in wanted and binary:
        out["f1"] = float(f1_score(y_true, y_pred, pos_label=classes[1], zero_division=0.0))
    elif "f1" in wanted:
        out["f1"] = float(f1_score(y_true, y_pred, average="macro", labels=classes, zero_division=0.0))
    if y_proba is None:
        return out
    proba = np.asarray(y_proba, dtype=float)
    if proba.ndim == 1:  # the positive-class probability of a binary problem
        proba = np.column_stack([1.0 - proba, proba])
    if "log_loss" in wanted:
        out["log_loss"] = float(log_loss(y_true, proba, labels=classes))
    if "brier" in wanted and binary:
        out["brier"] = float(np.mean((proba[:, 1] - (y_true == classes[1])) ** 2))
    if len(np.unique(y_true)) < 2:
        return out
    try:
        if binary and "roc_auc" in wanted:
            out["roc_auc"] = float(roc_auc_score(y_true == classes[1], proba[:, 1]))
        elif "roc_auc" in wanted:
            out["roc_auc"] = float(roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes))
    except ValueError as err:  # e.g. a class missing from this holdout
        log.warning("roc_auc left out: %s", err)
    if binary and "pr_auc" in wanted:
        out["pr_auc"] = float(average_precision_score(y_true == classes[1], proba[:, 1]))
    return out


def scorer(task: str, metric: str, classes: np.ndarray) -> Any:
    """The scikit-learn scorer for ``metric``; "neg_*" scorers are negated back in :func:`cv_value`."""
    binary = len(classes) == 2
    if metric == "roc_auc":
        return "roc_auc" if binary else "roc_auc_ovr"
    if metric == "pr_auc":
        if not binary:
            raise BadInput(f"primary metric pr_auc needs a binary target, found {len(classes)} classes")
        return make_scorer(average_precision_score, response_method="predict_proba", pos_label=classes[1])
    if metric == "f1":
        return make_scorer(f1_score, pos_label=classes[1]) if binary else "f1_macro"
    return {
        "log_loss": "neg_log_loss",
        "brier": "neg_brier_score",
        "accuracy": "accuracy",
        "rmse": "neg_root_mean_squared_error",
        "mae": "neg_mean_absolute_error",
        "r2": "r2",
    }[metric]


def cv_value(scorer: Any, score: float) -> float:
    """A cross-validated ``score`` as the metric itself (sign restored for "neg_*" scorers)."""
    return -float(score) if isinstance(scorer, str) and scorer.startswith("neg_") else float(score)


def predict_with_proba(task: str, model: Any, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """(predictions, class probabilities or None, classes or None) of a fitted sklearn model."""
    y_pred = np.asarray(model.predict(X))
    if task == "classification" and hasattr(model, "predict_proba"):
        return y_pred, np.asarray(model.predict_proba(X)), getattr(model, "classes_", None)
    return y_pred, None, None
