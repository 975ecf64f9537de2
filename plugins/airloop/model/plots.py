"""Evaluation plots, logged to a model's MLflow run under ``plots/``: ROC, precision-recall, calibration and
confusion matrix (classification), residuals (regression), and permutation feature importance (both).

Matplotlib runs headless (the Agg backend, no display); each figure is small and cheap (~0.1 s).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from airloop.config import PipelineConfig

log = logging.getLogger(__name__)

IMPORTANCE_ROWS = 500  # permutation importance on a seeded sample of the holdout keeps it cheap
IMPORTANCE_REPEATS = 3
FIGSIZE = (5.0, 4.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _binary_scores(y_true: np.ndarray, scored: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(is positive, positive-class probability) of a binary classifier; None otherwise."""
    proba, classes = scored.get("y_proba"), scored.get("classes")
    if proba is None or classes is None or len(classes) != 2:
        return None
    return y_true == classes[1], np.asarray(proba)[:, 1]


def roc_figure(pos: np.ndarray, score: np.ndarray):
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(pos, score)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(fpr, tpr, label=f"ROC-AUC {roc_auc_score(pos, score):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve (holdout)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def pr_figure(pos: np.ndarray, score: np.ndarray):
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    precision, recall, _ = precision_recall_curve(pos, score)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.step(recall, precision, where="post", label=f"PR-AUC {average_precision_score(pos, score):.3f}")
    ax.axhline(pos.mean(), linestyle="--", color="grey", linewidth=0.8, label=f"base rate {pos.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (holdout)", ylim=(0, 1.02))
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def calibration_figure(pos: np.ndarray, score: np.ndarray, bins: int = 10):
    from sklearn.calibration import calibration_curve

    plt = _pyplot()
    observed, predicted = calibration_curve(pos, score, n_bins=bins, strategy="quantile")
    brier = float(np.mean((score - pos) ** 2))
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(predicted, observed, marker="o", label=f"model (Brier {brier:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="observed share positive", title="Calibration (holdout)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: Any):
    from sklearn.metrics import confusion_matrix

    plt = _pyplot()
    labels = list(classes) if classes is not None else sorted(set(y_true) | set(y_pred))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="black")
    ticks = range(len(labels))
    ax.set_xticks(ticks, [str(c) for c in labels])
    ax.set_yticks(ticks, [str(c) for c in labels])
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (holdout)")
    fig.tight_layout()
    return fig


def residuals_figure(y_true: np.ndarray, y_pred: np.ndarray):
    plt = _pyplot()
    residuals = y_true.astype(float) - y_pred.astype(float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 1.8, FIGSIZE[1]))
    left.scatter(y_pred, residuals, s=6, alpha=0.5)
    left.axhline(0, color="grey", linewidth=0.8)
    left.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals vs predicted")
    right.hist(residuals, bins=30)
    right.set(xlabel="actual - predicted", ylabel="rows", title="Residual distribution")
    fig.tight_layout()
    return fig


def feature_importance(cfg: PipelineConfig, model: Any, holdout: pd.DataFrame, features: list[str]) -> pd.Series:
    """Permutation importance of each raw feature column on a seeded holdout sample (drop of the primary
    metric when the column is shuffled), sorted, largest first."""
    from sklearn.inspection import permutation_importance

    from airloop.model.metrics import scorer

    sample = holdout.sample(n=min(len(holdout), IMPORTANCE_ROWS), random_state=cfg.training.seed)
    classes = np.unique(sample[cfg.target]) if cfg.task == "classification" else np.array([])
    importance_scorer = scorer(cfg.task, cfg.primary_metric, classes)
    result = permutation_importance(
        model,
        sample[features],
        sample[cfg.target],
        scoring=importance_scorer,
        n_repeats=IMPORTANCE_REPEATS,
        random_state=cfg.training.seed,
        n_jobs=1,
    )
    return pd.Series(result.importances_mean, index=features).sort_values(ascending=False)


def importance_figure(importance: pd.Series, metric: str, top: int = 15):
    plt = _pyplot()
    shown = importance.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], max(2.5, 0.3 * len(shown) + 1)))
    ax.barh([str(i) for i in shown.index], shown.to_numpy())
    ax.set(xlabel=f"drop in {metric} when shuffled", title="Permutation feature importance (holdout)")
    fig.tight_layout()
    return fig


def evaluation_figures(cfg: PipelineConfig, model: Any, holdout: pd.DataFrame, scored: dict) -> dict[str, Any]:
    """{"plots/<name>.png": figure} for this task type; the caller closes them."""
    y_true = holdout[cfg.target].to_numpy()
    figures: dict[str, Any] = {}
    if cfg.task == "classification":
        binary = _binary_scores(y_true, scored)
        if binary is not None and 0 < binary[0].sum() < len(binary[0]):
            figures["plots/roc.png"] = roc_figure(*binary)
            figures["plots/precision_recall.png"] = pr_figure(*binary)
            figures["plots/calibration.png"] = calibration_figure(*binary)
        figures["plots/confusion_matrix.png"] = confusion_figure(y_true, scored["y_pred"], scored.get("classes"))
    else:
        figures["plots/residuals.png"] = residuals_figure(y_true, np.asarray(scored["y_pred"]))
    importance = feature_importance(cfg, model, holdout, list(scored["features"]))
    figures["plots/feature_importance.png"] = importance_figure(importance, cfg.primary_metric)
    return figures


def log_evaluation_plots(
    client: Any, run_id: str, cfg: PipelineConfig, model: Any, holdout: pd.DataFrame, scored: dict
) -> list[str]:
    """Draw :func:`evaluation_figures` and log each to run ``run_id``; returns the artifact paths."""
    plt = _pyplot()
    figures = evaluation_figures(cfg, model, holdout, scored)
    try:
        for path, fig in figures.items():
            client.log_figure(run_id, fig, path)
    finally:
        for fig in figures.values():
            plt.close(fig)
    return list(figures)
