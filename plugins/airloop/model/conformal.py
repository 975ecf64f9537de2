"""Split-conformal uncertainty: prediction sets (classification) and intervals (regression) at a declared
coverage (``evaluation.coverage``), calibrated on rows the model did not train on.

The gate calibrates on a seeded half of the frozen holdout and measures the coverage on the other half, so
both halves are new to the model. The rule is MAPIE's split-conformal "lac" score for classification
(``1 - p(true class)``) and "absolute" residual for regression, with the finite-sample quantile
``ceil((n + 1) * coverage) / n``; it is written out here because the result is one number (the threshold)
that travels with the model: a served row's set is every class with ``p >= 1 - threshold``, its interval
``prediction +- threshold``. ``tests/unit/model/test_conformal.py`` checks the sets equal MAPIE's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from airloop.values import plain


def conformal_threshold(scores: np.ndarray, coverage: float) -> float:
    """The split-conformal quantile of calibration nonconformity ``scores`` for ``coverage``
    (``inf`` when there are too few rows for that coverage)."""
    n = len(scores)
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        return float("inf")
    return float(np.sort(np.asarray(scores, dtype=float))[rank - 1])


def nonconformity(task: str, y_true: np.ndarray, scored: dict) -> np.ndarray:
    """Per row: 1 - probability of the true class (classification) or |y - prediction| (regression)."""
    if task == "regression":
        return np.abs(np.asarray(y_true, dtype=float) - np.asarray(scored["y_pred"], dtype=float))
    classes = list(np.asarray(scored["classes"]))
    proba = np.asarray(scored["y_proba"], dtype=float)
    index = np.array([classes.index(v) if v in classes else -1 for v in np.asarray(y_true)])
    p_true = np.where(index >= 0, proba[np.arange(len(proba)), np.clip(index, 0, None)], 0.0)
    return 1.0 - p_true


def prediction_sets(proba: np.ndarray, threshold: float) -> np.ndarray:
    """(rows, classes) boolean: the classes in each row's set (probability at least 1 - threshold)."""
    return np.asarray(proba, dtype=float) >= 1.0 - threshold - 1e-12


# Version tags the gate sets (airloop.model.evaluate) so serving, batch scoring and review can apply the threshold.
THRESHOLD_TAG = "airloop.conformal.threshold"
COVERAGE_TAG = "airloop.conformal.coverage"


def conformal_tags(tags: dict[str, str]) -> tuple[float | None, float | None]:
    """(threshold, declared coverage) from a model version's tags; None for what is absent or unreadable."""

    def number(key: str) -> float | None:
        try:
            value = float(tags[key])
        except (KeyError, TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    return number(THRESHOLD_TAG), number(COVERAGE_TAG)


# The columns a served prediction carries beside its value, per task (the serving log and batch predictions).
SERVED_COLUMNS = {"classification": ("prediction_set", "set_size"), "regression": ("interval_low", "interval_high")}


def set_lists(member: np.ndarray, classes: Any) -> list[list]:
    """Per row, the classes (plain values, in class order) of a (rows, classes) boolean membership matrix.

    Cheap per row: each row's set is coded as one integer (a bit per class) in one vector operation, and rows
    with the same code share one list object (a binary model has at most 4 distinct sets)."""
    member = np.asarray(member, dtype=bool)
    names = [plain(c) for c in np.asarray(classes)]
    if member.ndim != 2 or member.shape[0] == 0:
        return []
    k = member.shape[1]
    if k > 62:  # too many classes for a bit code: one row at a time
        return [[names[j] for j in np.flatnonzero(row)] for row in member]
    codes = member.dot(np.left_shift(1, np.arange(k, dtype=np.int64))).tolist()
    shared: dict[int, list] = {}
    out = []
    for code in codes:
        found = shared.get(code)
        if found is None:
            found = shared[code] = [names[j] for j in range(k) if code >> j & 1]
        out.append(found)
    return out


def served_columns(task: str, threshold: float | None, y_pred: Any, y_proba: Any, classes: Any) -> dict[str, list]:
    """What served predictions carry, as columns (lists, one value per row): ``prediction_set`` and
    ``set_size`` (classification: every class with ``p >= 1 - threshold``) or ``interval_low`` and
    ``interval_high`` (regression: ``prediction -+ threshold``). ``{}`` without a finite threshold (a version
    the gate did not calibrate) or, for a classifier, without probabilities. A few vector operations over the
    whole micro-batch: cheap enough for the serving fast path."""
    if threshold is None or not math.isfinite(threshold):
        return {}
    if task == "regression":
        pred = np.asarray(y_pred, dtype=float)
        return {"interval_low": (pred - threshold).tolist(), "interval_high": (pred + threshold).tolist()}
    if y_proba is None:
        return {}
    member = prediction_sets(y_proba, threshold)
    return {"prediction_set": set_lists(member, classes), "set_size": member.sum(axis=1).tolist()}


def uncertainty(task: str, y_pred: Any, y_proba: Any, classes: Any, threshold: float) -> list[dict[str, Any]]:
    """Per row, what a served prediction carries: {"prediction_set": [classes]} or {"interval": [lo, hi]}."""
    cols = served_columns(task, threshold, y_pred, y_proba, classes)
    if task == "regression":
        return [{"interval": [lo, hi]} for lo, hi in zip(cols["interval_low"], cols["interval_high"], strict=True)]
    return [{"prediction_set": s} for s in cols.get("prediction_set", [])]


def calibrate_and_measure(task: str, y_true: np.ndarray, scored: dict, coverage: float, seed: int) -> dict[str, Any]:
    """Calibrate on a seeded half of the holdout, measure on the other half.

    Returns {"method", "coverage_declared", "coverage_measured", "threshold", "calibration_rows",
    "test_rows", and "mean_set_size" / "empty_set_share" (classification) or "mean_interval_width"}; with
    fewer than 20 holdout rows only {"method", "coverage_declared", "skipped"}.
    """
    method = "split conformal (lac)" if task == "classification" else "split conformal (absolute residual)"
    n = len(y_true)
    if n < 20:
        return {"method": method, "coverage_declared": coverage, "skipped": f"{n} holdout rows; need 20"}
    order = np.random.default_rng(seed).permutation(n)
    calib, test = order[: n // 2], order[n // 2 :]
    scores = nonconformity(task, y_true, scored)
    threshold = conformal_threshold(scores[calib], coverage)
    covered = scores[test] <= threshold
    out = {
        "method": method,
        "coverage_declared": coverage,
        "coverage_measured": float(np.mean(covered)),
        "threshold": threshold,
        "calibration_rows": int(len(calib)),
        "test_rows": int(len(test)),
    }
    if task == "classification":
        sizes = prediction_sets(np.asarray(scored["y_proba"])[test], threshold).sum(axis=1)
        out["mean_set_size"] = float(np.mean(sizes))
        out["empty_set_share"] = float(np.mean(sizes == 0))
    else:
        out["mean_interval_width"] = float(2 * threshold)
    return out


def describe(c: dict[str, Any] | None) -> str:
    """One line for the summary and the model card."""
    if not c:
        return "conformal uncertainty not measured"
    if "skipped" in c:
        return f"{c['method']}: not calibrated ({c['skipped']})"
    shape = (
        f"mean set size {c['mean_set_size']:.2f}"
        if "mean_set_size" in c
        else f"mean interval width {c['mean_interval_width']:.4f}"
    )
    return (
        f"{c['method']} at declared coverage {c['coverage_declared']:.0%}: measured {c['coverage_measured']:.1%} on "
        f"{c['test_rows']} holdout rows (calibrated on {c['calibration_rows']} others); threshold "
        f"{c['threshold']:.4f}, {shape}"
    )
