"""Which way each metric is better. Light on purpose (no scikit-learn): ``airloop status`` reads it."""

from __future__ import annotations

from airloop.errors import BadInput

# "max": greater is better; "min": lower is better.
METRIC_DIRECTIONS: dict[str, str] = {
    "roc_auc": "max",
    "pr_auc": "max",
    "f1": "max",
    "accuracy": "max",
    "log_loss": "min",
    "brier": "min",
    "rmse": "min",
    "mae": "min",
    "r2": "max",
}


def greater_is_better(metric: str) -> bool:
    """True when a higher value of ``metric`` is better; BadInput for an unknown metric."""
    if metric not in METRIC_DIRECTIONS:
        raise BadInput(f"metric {metric!r}: expected one of {sorted(METRIC_DIRECTIONS)}")
    return METRIC_DIRECTIONS[metric] == "max"
