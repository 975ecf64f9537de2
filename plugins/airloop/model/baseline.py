"""The trivial baseline every challenger must credibly beat: the class prior (classification) or the mean
(regression) of the training labels, scored on the same frozen holdout as the challenger.

Without it the first model of a pipeline is promoted with nothing to compare, and on data with no signal a
model barely better than guessing becomes champion. The check uses the same paired, one-sided bootstrap
bound as the champion check (:func:`airloop.model.gate.compare`), with no tolerance: the challenger must be
credibly better than the baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from airloop.config import PipelineConfig


def baseline_kind(task: str) -> str:
    return "class prior" if task == "classification" else "training mean"


def baseline_scored(task: str, y_train: Any, n_rows: int, classes: Any = None) -> dict[str, Any]:
    """The baseline's predictions for ``n_rows`` holdout rows, in the form :func:`gate.weighted_metric` takes
    ({"y_pred", "y_proba", "classes"}): every row gets the training class shares (most frequent class as the
    label) or the training mean. ``classes`` (the challenger's ``classes_``) orders the probability columns."""
    y_train = np.asarray(y_train)
    if task == "regression":
        return {"y_pred": np.full(n_rows, float(np.mean(y_train.astype(float)))), "y_proba": None, "classes": None}
    classes = np.asarray(classes) if classes is not None else np.unique(y_train)
    shares = np.array([np.mean(y_train == c) for c in classes], dtype=float)
    shares = np.clip(shares, 1e-6, None)
    shares /= shares.sum()
    majority = classes[int(np.argmax(shares))]
    return {
        "y_pred": np.full(n_rows, majority, dtype=np.asarray(classes).dtype),
        "y_proba": np.tile(shares, (n_rows, 1)),
        "classes": classes,
    }


def baseline_check(
    cfg: PipelineConfig, metric: str, value: float, baseline_value: float, cmp: dict[str, Any]
) -> dict[str, Any]:
    """Is the challenger credibly better than the baseline? Passes only when the one-sided 95% lower bound
    of the paired bootstrap improvement is above 0 (the point estimate decides, saying so, without a CI)."""
    kind = baseline_kind(cfg.task)
    point, bounds = cmp["improvement"], cmp["bounds"]
    head = (
        f"{metric} {value:.4f} (challenger) vs {baseline_value:.4f} ({kind} baseline) on the same holdout: "
        f"improvement {point:+.4f}"
    )
    if bounds is None:
        return {
            "check": "baseline",
            "passed": point > 1e-12,
            "detail": f"{head}; no bootstrap CI (too few rows), judged on the point estimate",
        }
    passed = bounds[0] > 0
    verdict = "credibly better" if passed else "not credibly better than guessing"
    return {
        "check": "baseline",
        "passed": passed,
        "detail": f"{head}; one-sided 95% lower bound {bounds[0]:+.4f} must be > 0 ({verdict}); two-sided 90% "
        f"interval [{bounds[0]:+.4f}, {bounds[1]:+.4f}] over {cmp['resamples']} paired bootstrap resamples",
    }
