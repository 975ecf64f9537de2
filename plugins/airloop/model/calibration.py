"""Probability calibration for estimated performance: a monotone map from a binary classifier's scores to
calibrated probabilities, fitted on rows the model did not train on (the frozen holdout).

CBPE (:mod:`airloop.monitoring.estimate`) reads a batch's expected confusion matrix off calibrated
probabilities, so an over- or under-confident model would give a biased estimate. The served model is left
as it is (its scores and the gate's metrics do not change); the map is a small JSON artifact of the training
run, ``calibration/calibration.json``, with a reliability plot beside it (``calibration/reliability.png``).

``fit_calibration(is_positive, score)`` returns the map as a dict; ``apply_calibration(cal, score)`` applies
it. The map is Platt scaling or isotonic, whichever has the lower two-fold cross-validated Brier score on
the holdout, and only when it beats the raw scores; otherwise the scores are already calibrated and the map
is the identity (``method: "none"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from airloop.values import plain

CALIBRATION_ARTIFACT = "calibration/calibration.json"
RELIABILITY_ARTIFACT = "calibration/reliability.png"
MIN_CALIBRATION_ROWS = 50  # fewer holdout rows: isotonic regression overfits, keep the scores as they are


def expected_calibration_error(is_positive: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """Mean |observed share positive - mean probability| over equal-count bins, weighted by rows."""
    pos, prob = np.asarray(is_positive, dtype=float), np.asarray(prob, dtype=float)
    if prob.size == 0:
        return float("nan")
    order = np.argsort(prob, kind="mergesort")
    err = 0.0
    for chunk in np.array_split(order, min(bins, prob.size)):
        err += abs(pos[chunk].mean() - prob[chunk].mean()) * chunk.size
    return float(err / prob.size)


def _isotonic(score: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of a piecewise-linear isotonic map: each flat block of the isotonic fit becomes one knot at its
    centre. Flat steps would give whole ranges of scores one probability, and CBPE's ROC-AUC would then
    count the pairs inside a step as coin flips."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, pos)
    x, y = np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float)
    block = np.concatenate([[0], np.cumsum(np.diff(y) != 0)])
    counts = np.bincount(block)
    cx = np.bincount(block, weights=x) / counts
    cy = np.bincount(block, weights=y) / counts
    # Keep the fitted range's ends, so scores beyond the outer centres are still mapped as the fit says.
    return np.concatenate([[x[0]], cx, [x[-1]]]), np.concatenate([[y[0]], cy, [y[-1]]])


def _logit(score: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(score, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(s / (1 - s))


def _platt(score: np.ndarray, pos: np.ndarray) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a * logit(score) + b), fitted by logistic regression."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(score)[:, None], pos.astype(int))
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def _apply(method: str, params: dict[str, Any], score: np.ndarray) -> np.ndarray:
    if method == "isotonic":
        return np.interp(score, np.asarray(params["x"]), np.asarray(params["y"]))
    if method == "platt":
        return 1.0 / (1.0 + np.exp(-(params["a"] * _logit(score) + params["b"])))
    return np.clip(np.asarray(score, dtype=float), 0.0, 1.0)


def _params(method: str, score: np.ndarray, pos: np.ndarray) -> dict[str, Any]:
    if method == "isotonic":
        x, y = _isotonic(score, pos)
        return {"x": x.tolist(), "y": y.tolist()}
    if method == "platt":
        a, b = _platt(score, pos)
        return {"a": a, "b": b}
    return {}


def fit_calibration(
    is_positive: Any, score: Any, *, seed: int = 0, methods: tuple[str, ...] = ("platt", "isotonic")
) -> dict[str, Any]:
    """The calibration map of positive-class ``score`` s against holdout labels (``is_positive``, bools).

    Each of ``methods`` ("platt": a logistic map of the score's logit, smooth and hard to overfit;
    "isotonic": any monotone map, needs more rows) is scored by its two-fold cross-validated Brier score on
    the holdout; the best one is kept if it beats the raw scores, else the map is the identity ("none").
    Returns {"method", its parameters ("a","b" or "x","y"), "rows", "brier_raw", "brier_cv" (per method),
    "ece_raw", "ece_calibrated", "reason"}.
    """
    pos = np.asarray(is_positive, dtype=float)
    score = np.asarray(score, dtype=float)
    out: dict[str, Any] = {"rows": int(score.size), "brier_raw": float(np.mean((score - pos) ** 2))}
    out["ece_raw"] = expected_calibration_error(pos, score)
    if score.size < MIN_CALIBRATION_ROWS or len(np.unique(pos)) < 2:
        return {
            **out,
            "method": "none",
            "brier_cv": {},
            "ece_calibrated": out["ece_raw"],
            "reason": f"{score.size} holdout rows (need {MIN_CALIBRATION_ROWS} and both classes): scores kept",
        }
    # Two-fold cross-validation on the holdout: which map predicts the labels of rows it did not see best?
    fold = np.random.default_rng(seed).permutation(score.size) % 2
    cv: dict[str, float] = {}
    for method in methods:
        sq = np.empty(score.size)
        for k in (0, 1):
            fit, held = fold != k, fold == k
            if len(np.unique(pos[fit])) < 2:
                sq[held] = (score[held] - pos[held]) ** 2
                continue
            sq[held] = (_apply(method, _params(method, score[fit], pos[fit]), score[held]) - pos[held]) ** 2
        cv[method] = float(sq.mean())
    out["brier_cv"] = cv
    best = min(cv, key=cv.get) if cv else None
    if best is None or cv[best] >= out["brier_raw"]:
        return {
            **out,
            "method": "none",
            "ece_calibrated": out["ece_raw"],
            "reason": f"no map lowers the cross-validated Brier score below the raw {out['brier_raw']:.4f} "
            f"({', '.join(f'{m} {v:.4f}' for m, v in cv.items())}): scores already calibrated",
        }
    params = _params(best, score, pos)
    return {
        **out,
        **params,
        "method": best,
        "ece_calibrated": expected_calibration_error(pos, _apply(best, params, score)),
        "reason": f"{best} has the lowest cross-validated Brier score ({cv[best]:.4f}; raw {out['brier_raw']:.4f})",
    }


def apply_calibration(calibration: dict[str, Any] | None, score: Any) -> np.ndarray:
    """Calibrated probabilities of positive-class ``score`` s (the scores themselves for method "none")."""
    method = (calibration or {}).get("method", "none")
    return _apply(method, calibration or {}, np.asarray(score, dtype=float))


def reliability_figure(is_positive: np.ndarray, score: np.ndarray, calibration: dict[str, Any], bins: int = 10):
    """Observed share positive against mean probability, raw and calibrated, on quantile bins."""
    from sklearn.calibration import calibration_curve

    from airloop.model.plots import FIGSIZE, _pyplot

    plt = _pyplot()
    pos = np.asarray(is_positive, dtype=int)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for label, prob in (
        (f"raw (ECE {calibration['ece_raw']:.3f})", np.asarray(score, dtype=float)),
        (f"calibrated, {calibration['method']} (ECE {calibration['ece_calibrated']:.3f})", None),
    ):
        prob = apply_calibration(calibration, score) if prob is None else prob
        observed, predicted = calibration_curve(pos, prob, n_bins=bins, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfectly calibrated")
    ax.set(xlabel="mean probability", ylabel="observed share positive", title="Reliability (holdout)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def calibrate_and_log(y_true: Any, proba: np.ndarray | None, classes: Any, *, seed: int = 0) -> dict | None:
    """In the active MLflow run: fit the map on the holdout (binary classifiers only), log it and its
    reliability plot, and tag ``airloop.calibration`` with the method. Returns the map, or None when the
    model is not a binary classifier with probabilities."""
    import mlflow

    if proba is None or classes is None or len(classes) != 2:
        return None
    pos = np.asarray(y_true) == np.asarray(classes)[1]
    score = np.asarray(proba, dtype=float)[:, 1]
    calibration = {**fit_calibration(pos, score, seed=seed), "positive_class": plain(np.asarray(classes)[1])}
    mlflow.log_dict(calibration, CALIBRATION_ARTIFACT)
    mlflow.set_tag("airloop.calibration", calibration["method"])
    mlflow.log_metrics(
        {"holdout_ece_raw": calibration["ece_raw"], "holdout_ece_calibrated": calibration["ece_calibrated"]}
    )
    try:
        import matplotlib.pyplot as plt

        fig = reliability_figure(pos, score, calibration)
        mlflow.log_figure(fig, RELIABILITY_ARTIFACT)
        plt.close(fig)
    except Exception as err:  # a plot must never fail a training
        import logging

        logging.getLogger(__name__).warning("reliability plot not logged: %s", err)
    return calibration


def load_calibration(run_id: str) -> dict | None:
    """The calibration map logged with a training run, or None for runs trained before calibration."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{CALIBRATION_ARTIFACT}")
    except (MlflowException, OSError):
        return None
