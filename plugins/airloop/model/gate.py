"""The gate's statistics and checks: paired bootstrap comparisons of challenger and champion on the same rows,
and the champion, production-window and slice checks built on them (see :mod:`airloop.model.evaluate`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from airloop.config import PipelineConfig
from airloop.model.metrics import compute_metrics, greater_is_better

MIN_SLICE_ROWS = 30  # smaller slices are reported, not judged: their metric is mostly noise
MAX_SLICE_VALUES = 12  # a numeric segment column with more values is sliced by quartile


# ------------------------------------------------------------------------------ bootstrap, vectorised


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) counts: how often each holdout row appears in each seeded bootstrap resample.

    A resample drawn with replacement is the same as weighting each row by its count, so every metric below
    is computed for all resamples at once as a weighted metric.
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def _grouped(weights: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``weights`` (B, n) over groups of tied ``scores``, groups ordered by ascending score: (B, G)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    cum = np.cumsum(weights[:, order], axis=1)[:, ends]
    return np.diff(cum, axis=1, prepend=0.0), sorted_scores[ends]


def _weighted_auc(pos: np.ndarray, scores: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC-AUC per resample (ties count one half), as roc_auc_score with sample_weight=counts."""
    gp, _ = _grouped(W * pos, scores)
    gn, _ = _grouped(W * ~pos, scores)
    below = np.cumsum(gn, axis=1) - gn
    with np.errstate(invalid="ignore", divide="ignore"):
        return (gp * (below + 0.5 * gn)).sum(axis=1) / (gp.sum(axis=1) * gn.sum(axis=1))


def _weighted_ap(pos: np.ndarray, scores: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average precision per resample, as average_precision_score with sample_weight=counts."""
    gp, _ = _grouped(W * pos, -scores)  # descending score
    gn, _ = _grouped(W * ~pos, -scores)
    tp, fp = np.cumsum(gp, axis=1), np.cumsum(gn, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        return (gp * precision).sum(axis=1) / gp.sum(axis=1)


def _wmean(values: np.ndarray, W: np.ndarray) -> np.ndarray:
    return (W * values).sum(axis=1) / W.sum(axis=1)


def weighted_metric(task: str, metric: str, y_true: np.ndarray, scored: dict, W: np.ndarray) -> np.ndarray:
    """``metric`` of one model's predictions (``scored``: y_pred, y_proba, classes) for every row of the
    weight matrix ``W`` (B, n); NaN where undefined (e.g. one class only). Vectorised for regression and
    binary classification; multiclass roc_auc/f1/log_loss fall back to a loop over resamples."""
    y_pred = np.asarray(scored["y_pred"])
    if task == "regression":
        err = y_pred.astype(float) - y_true.astype(float)
        if metric == "rmse":
            return np.sqrt(_wmean(err**2, W))
        if metric == "mae":
            return _wmean(np.abs(err), W)
        if metric == "r2":
            mean = _wmean(y_true.astype(float), W)
            total = (W * (y_true.astype(float)[None, :] - mean[:, None]) ** 2).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return 1.0 - (W * err**2).sum(axis=1) / total
    classes = scored.get("classes")
    classes = np.asarray(classes) if classes is not None else np.unique(y_true)
    proba = scored.get("y_proba")
    if metric == "accuracy":
        return _wmean((y_pred == y_true).astype(float), W)
    if len(classes) == 2:
        pos = y_true == classes[1]
        if metric == "f1":
            pred_pos = y_pred == classes[1]
            tp, fp, fn = ((W * (a & b)).sum(axis=1) for a, b in ((pos, pred_pos), (~pos, pred_pos), (pos, ~pred_pos)))
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        if proba is not None:
            p1 = np.asarray(proba, dtype=float)
            p1 = p1[:, 1] if p1.ndim == 2 else p1
            if metric == "roc_auc":
                return _weighted_auc(pos, p1, W)
            if metric == "pr_auc":
                return _weighted_ap(pos, p1, W)
            if metric == "brier":
                return _wmean((p1 - pos) ** 2, W)
            if metric == "log_loss":
                eps = np.finfo(float).eps
                return _wmean(-np.log(np.clip(np.where(pos, p1, 1.0 - p1), eps, 1.0)), W)
    out = np.full(len(W), np.nan)  # multiclass: one resample at a time
    for b, counts in enumerate(W):
        idx = np.repeat(np.arange(len(y_true)), counts.astype(int))
        sub_proba = np.asarray(proba)[idx] if proba is not None else None
        got = compute_metrics(task, y_true[idx], y_pred[idx], sub_proba, classes=classes, only=[metric])
        out[b] = got.get(metric, np.nan)
    return out


def improvement(metric: str, challenger: Any, champion: Any) -> Any:
    """How much better the challenger is (direction-aware: positive = better), scalars or arrays."""
    diff = np.asarray(challenger, dtype=float) - np.asarray(champion, dtype=float)
    return diff if greater_is_better(metric) else -diff


def compare(
    cfg: PipelineConfig, metric: str, y_true: np.ndarray, chall: dict, champ: dict, W: np.ndarray | None = None
) -> dict[str, Any]:
    """Paired bootstrap of the improvement (challenger over champion) on the same rows.

    Returns {"improvement" (point estimate), "ci": [lo, hi] (two-sided 95%), "bounds": [lower, upper]
    (one-sided 95% confidence bounds: the 5th and 95th percentiles), "resamples"}; "ci" and "bounds" are None
    when fewer than half the resamples define the metric.
    """
    if W is None:
        W = bootstrap_weights(len(y_true), cfg.evaluation.bootstrap_resamples, cfg.training.seed)
    full = np.ones((1, len(y_true)))
    point = float(improvement(metric, *(weighted_metric(cfg.task, metric, y_true, m, full)[0] for m in (chall, champ))))
    diffs = improvement(
        metric,
        weighted_metric(cfg.task, metric, y_true, chall, W),
        weighted_metric(cfg.task, metric, y_true, champ, W),
    )
    diffs = diffs[np.isfinite(diffs)]
    ci = bounds = None
    if len(diffs) >= len(W) // 2:
        ci = [float(v) for v in np.percentile(diffs, [2.5, 97.5])]
        bounds = [float(v) for v in np.percentile(diffs, [5.0, 95.0])]
    return {"improvement": point, "ci": ci, "bounds": bounds, "resamples": int(len(diffs))}


def describe_interval(lower_bound: float | None, interval_90: list[float] | None) -> str:
    """The gate's interval as every report shows it, consistent with its rule: the one-sided 95% lower bound
    of the improvement (what the champion check decides on) and the two-sided 90% interval whose lower end
    it is. (A two-sided 95% interval can include zero while the one-sided 95% bound is above it.)"""
    if lower_bound is None or not interval_90:
        return "no bootstrap interval (too few rows)"
    return (
        f"one-sided 95% lower bound {lower_bound:+.4f}; two-sided 90% interval "
        f"[{interval_90[0]:+.4f}, {interval_90[1]:+.4f}] (paired bootstrap on the holdout)"
    )


# ------------------------------------------------------------------------------------------ the checks


def champion_check(
    cfg: PipelineConfig, metric: str, value: float, champion_value: float, champion_version: str, cmp: dict
) -> dict[str, Any]:
    """Is the challenger credibly not worse than the champion by more than ``tolerance``?

    A one-sided test at the 5% level on the paired bootstrap: passes only when the one-sided 95% lower
    confidence bound of the improvement (direction-aware) is above ``-tolerance``. With tolerance 0 the
    challenger must be credibly better, not better by the luck of one holdout. Without a CI (too few rows to
    resample) the point estimate decides, and the detail says so.
    """
    tol = cfg.evaluation.tolerance
    point, bounds = cmp["improvement"], cmp["bounds"]
    relation = f"better by {point:.4f}" if point > 1e-12 else ("equal" if abs(point) <= 1e-12 else "")
    relation = relation or f"worse by {-point:.4f}"
    head = (
        f"{metric} {value:.4f} (challenger) vs {champion_value:.4f} (champion v{champion_version}) on the same "
        f"holdout: {relation}"
    )
    if bounds is None:
        passed = point > -tol if tol > 0 else point > 1e-12
        return {
            "check": "champion",
            "passed": passed,
            "detail": f"{head}; no bootstrap CI (too few rows), judged on the point estimate, tolerance {tol:g}",
        }
    lower = bounds[0]
    passed = lower > -tol
    need = "> 0 (credibly better; tolerance 0)" if tol == 0 else f"> {-tol:g} (tolerance {tol:g})"
    lo, hi = bounds
    detail = (
        f"{head}; one-sided 95% lower bound of the improvement {lower:+.4f} must be {need}; "
        f"two-sided 90% interval [{lo:+.4f}, {hi:+.4f}] over {cmp['resamples']} paired bootstrap resamples"
    )
    return {"check": "champion", "passed": passed, "detail": detail}


def window_check(cfg: PipelineConfig, metric: str, window: dict[str, Any]) -> dict[str, Any]:
    """On the latest labeled production window the challenger must not be credibly worse: fails only when
    the one-sided 95% upper bound of the improvement is below ``-tolerance``. Passes (saying why) without a
    window."""
    if "skipped" in window:
        return {"check": "production_window", "passed": True, "detail": window["skipped"]}
    tol = cfg.evaluation.tolerance
    cmp = window["compare"]
    head = (
        f"{metric} {window['challenger']:.4f} (challenger) vs {window['champion']:.4f} (champion) on "
        f"{window['rows']} labeled production rows of {', '.join(window['batches'])}"
    )
    if cmp["bounds"] is None:
        return {"check": "production_window", "passed": True, "detail": f"{head}; too few rows for a CI, not judged"}
    upper = cmp["bounds"][1]
    passed = upper >= -tol
    detail = (
        f"{head}: one-sided 95% upper bound of the improvement {upper:+.4f} must be >= {-tol:g} (not credibly worse)"
    )
    return {"check": "production_window", "passed": passed, "detail": detail}


def segment_labels(frame: pd.DataFrame, column: str) -> pd.Series:
    """The slice of each row for one segment column: its value, or its quartile for a many-valued number."""
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_SLICE_VALUES:
        return pd.qcut(values, 4, duplicates="drop").astype(str)
    return values.astype("string").fillna("(missing)").astype(str)


def slice_metrics(
    cfg: PipelineConfig, metric: str, holdout: pd.DataFrame, chall: dict, champ: dict | None
) -> list[dict[str, Any]]:
    """The primary metric per slice of each segment column (challenger, and champion when there is one).

    Each entry: {"column", "value", "rows", "challenger", "champion", "improvement", "judged"}; a slice is
    judged only with at least MIN_SLICE_ROWS rows and the metric defined for both models.
    """
    y_true = holdout[cfg.target].to_numpy()
    out = []
    for column in cfg.segment_columns:
        if column not in holdout.columns:
            out.append({"column": column, "value": None, "rows": 0, "missing": True, "judged": False})
            continue
        labels = segment_labels(holdout, column).to_numpy()
        values = sorted(set(labels))
        W = np.stack([(labels == v).astype(float) for v in values])  # one weight row per slice
        ch = weighted_metric(cfg.task, metric, y_true, chall, W)
        cp = weighted_metric(cfg.task, metric, y_true, champ, W) if champ is not None else np.full(len(values), np.nan)
        for i, value in enumerate(values):
            rows = int(W[i].sum())
            entry = {"column": column, "value": value, "rows": rows, "challenger": _finite(ch[i])}
            entry["champion"] = _finite(cp[i])
            both = entry["challenger"] is not None and entry["champion"] is not None
            entry["improvement"] = float(improvement(metric, ch[i], cp[i])) if both else None
            entry["judged"] = both and rows >= MIN_SLICE_ROWS
            out.append(entry)
    return out


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def slice_check(cfg: PipelineConfig, metric: str, slices: list[dict[str, Any]], has_champion: bool) -> dict:
    """No judged slice may be worse than the champion's by more than ``evaluation.slice_tolerance``."""
    tol = cfg.evaluation.slice_tolerance
    if not cfg.segment_columns:
        return {"check": "slices", "passed": True, "detail": "no segment_columns declared"}
    missing = [s["column"] for s in slices if s.get("missing")]
    if missing:
        return {"check": "slices", "passed": False, "detail": f"segment columns {missing} are not in the holdout"}
    if not has_champion:
        return {"check": "slices", "passed": True, "detail": f"{len(slices)} slices measured; no champion to compare"}
    judged = [s for s in slices if s["judged"]]
    worst = sorted(judged, key=lambda s: s["improvement"])
    failed = [s for s in worst if s["improvement"] < -tol]
    skipped = len(slices) - len(judged)
    note = f" ({skipped} slices under {MIN_SLICE_ROWS} rows or undefined, not judged)" if skipped else ""
    if failed:
        shown = "; ".join(
            f"{s['column']}={s['value']} ({s['rows']} rows) {s['challenger']:.4f} vs {s['champion']:.4f}"
            for s in failed[:3]
        )
        return {
            "check": "slices",
            "passed": False,
            "detail": f"{len(failed)} slice(s) of {len(judged)} worse than the champion by more than "
            f"slice_tolerance {tol:g} on {metric}: {shown}{note}",
        }
    if not worst:
        return {"check": "slices", "passed": True, "detail": f"no slice large enough to judge{note}"}
    w = worst[0]
    return {
        "check": "slices",
        "passed": True,
        "detail": f"{len(judged)} slices within slice_tolerance {tol:g}; worst {w['column']}={w['value']} "
        f"({w['rows']} rows) {w['improvement']:+.4f}{note}",
    }
