"""Estimated performance of a batch before its labels arrive: CBPE for binary classifiers, DLE for regression.

**CBPE** (confidence-based performance estimation, as in NannyML): with calibrated probabilities ``p`` of the
positive class, row ``i`` is positive with probability ``p_i``. The expected confusion matrix of the model's
decisions is then ``E[TP] = sum(p_i over predicted positives)`` and so on, and every metric follows: accuracy
and F1 from the expected counts, ROC-AUC and PR-AUC from the expected positives and negatives per score
threshold (rows ranked by the model's own score, as the realized metric ranks them), log loss and Brier as
expectations. Probabilities come from the champion's calibration map (:mod:`airloop.model.calibration`). The
same arithmetic with 0/1 labels in place of ``p`` is the realized metric, which is how the band is made:
labels drawn from ``p`` give the spread of the realized metric around the estimate (the 5th to 95th
percentile, ``lower``/``upper``). CBPE assumes the relation of label to features did not change (covariate
shift only); a concept shift shows only when the labels arrive.

**DLE** (direct loss estimation) for regression: a gradient-boosting model learns the champion's absolute
and squared error from the features and the prediction on the frozen holdout (rows the champion did not
train on); its mean prediction over a batch estimates MAE and RMSE. ``r2`` is not estimated.

Scores are counted into ``SCORE_BINS`` fixed bins of the score, so a batch of any size streams through
:class:`CBPEAccumulator` chunk by chunk in O(rows) time and O(bins) memory.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

SCORE_BINS = 1 << 14  # 6e-5 wide: ties inside a bin move ROC-AUC by far less than 1e-4
BAND_ROWS = 5_000  # the band is simulated on a sample of this many rows and scaled to the batch's size
BAND_DRAWS = 100
ESTIMATED = {
    "classification": ("roc_auc", "pr_auc", "accuracy", "f1", "log_loss", "brier"),
    "regression": ("rmse", "mae"),
}
_EPS = 1e-15


class CBPEAccumulator:
    """Expected (or, with 0/1 ``prob``, realized) binary metrics, accumulated over chunks of a batch.

    With ``band_rows`` it also keeps a uniform sample of that many rows of the whole stream (bottom-k of
    random keys, drawn only for the rows that can enter), so :meth:`estimate` simulates the band once, at
    the end, as :func:`cbpe` does for a batch in memory."""

    def __init__(self, band_rows: int = 0, seed: int = 0) -> None:
        self.pos = np.zeros(SCORE_BINS)
        self.neg = np.zeros(SCORE_BINS)
        self.tp = self.fp = self.fn = self.tn = 0.0
        self.log_loss = self.brier = 0.0
        self.rows = 0
        self.band_rows, self.seed = band_rows, seed
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0)
        self._sample = np.empty((3, 0))  # score, prob, pred of the sampled rows

    def update(self, score: np.ndarray, prob: np.ndarray, pred_pos: np.ndarray) -> None:
        """Add rows: the model's positive-class ``score``, the probability each row is positive, and whether
        the model predicted positive."""
        score = np.asarray(score, dtype=float)
        prob = np.asarray(prob, dtype=float)
        pred = np.asarray(pred_pos, dtype=bool)
        b = (score * SCORE_BINS).astype(np.intp)
        np.clip(b, 0, SCORE_BINS - 1, out=b)
        pos = np.bincount(b, weights=prob, minlength=SCORE_BINS)
        self.pos += pos
        self.neg += np.bincount(b, minlength=SCORE_BINS) - pos
        # Sums as dot products: one pass each, no temporaries of the chunk's size.
        n_pred = int(np.count_nonzero(pred))
        tp = float(prob @ pred)
        positives = float(prob.sum())
        fp, fn = n_pred - tp, positives - tp
        tn = score.size - n_pred - fn
        self.tp, self.fp, self.fn, self.tn = self.tp + tp, self.fp + fp, self.fn + fn, self.tn + tn
        # log loss: -(p log s + (1 - p) log(1 - s)) = -(p (log s - log(1 - s)) + log(1 - s))
        s = np.clip(score, _EPS, 1 - _EPS)
        log_not = np.log1p(-s)
        log_odds = np.log(s, out=s)
        log_odds -= log_not
        self.log_loss -= float(prob @ log_odds) + float(log_not.sum())
        # Brier: p (1 - s)^2 + (1 - p) s^2 = s^2 - 2 p s + p
        self.brier += float(score @ score) - 2.0 * float(prob @ score) + positives
        if self.band_rows:
            self._keep_sample(score, prob, pred)
        self.rows += score.size

    def _keep_sample(self, score: np.ndarray, prob: np.ndarray, pred: np.ndarray) -> None:
        # A row enters the bottom-k only if its key is below the k-th smallest so far (``limit``); the number
        # of such rows in the chunk is Binomial(n, limit), at uniform positions, with keys Uniform(0, limit).
        full = self._keys.size >= self.band_rows
        limit = float(self._keys.max()) if full else 1.0
        m = int(self._rng.binomial(score.size, limit))
        if m == 0:
            return
        idx = self._rng.choice(score.size, size=m, replace=False) if m < score.size else np.arange(score.size)
        keys = np.concatenate([self._keys, limit * self._rng.random(m)])
        sample = np.concatenate([self._sample, np.vstack([score[idx], prob[idx], pred[idx]])], axis=1)
        if keys.size > self.band_rows:
            keep = np.argpartition(keys, self.band_rows - 1)[: self.band_rows]
            keys, sample = keys[keep], sample[:, keep]
        self._keys, self._sample = keys, sample

    def estimate(self) -> dict[str, Any]:
        """{"metrics", "lower", "upper", "rows"} of the whole stream, as :func:`cbpe` gives for one batch; the
        band (NaN without ``band_rows``) is simulated once on the kept sample and scaled to the stream's size."""
        point = self.metrics()
        if not self.band_rows or self._keys.size == 0:
            nan = {name: math.nan for name in point}
            return {"metrics": point, "lower": nan, "upper": dict(nan), "rows": self.rows}
        score, prob, pred = self._sample
        lower, upper = cbpe_band(score, prob, pred.astype(bool), point, rows=self.rows, seed=self.seed)
        return {"metrics": point, "lower": lower, "upper": upper, "rows": self.rows}

    def metrics(self) -> dict[str, float]:
        """The binary metrics of the rows so far (NaN where undefined, e.g. no expected positives)."""
        n = self.rows
        if n == 0:
            return {m: math.nan for m in ESTIMATED["classification"]}
        total_pos, total_neg = self.pos.sum(), self.neg.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            below = np.cumsum(self.neg) - self.neg
            auc = float((self.pos * (below + 0.5 * self.neg)).sum() / (total_pos * total_neg))
            tp_desc = np.cumsum(self.pos[::-1])
            fp_desc = np.cumsum(self.neg[::-1])
            precision = np.where(tp_desc + fp_desc > 0, tp_desc / (tp_desc + fp_desc), 0.0)
            ap = float((self.pos[::-1] * precision).sum() / total_pos)
            f1 = 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp > 0 else 0.0
        return {
            "roc_auc": auc,
            "pr_auc": ap,
            "accuracy": (self.tp + self.tn) / n,
            "f1": float(f1),
            "log_loss": self.log_loss / n,
            "brier": self.brier / n,
        }


def cbpe(
    score: Any, calibration: dict | None, pred_pos: Any = None, *, seed: int = 0, rows: int | None = None
) -> dict[str, Any]:
    """Estimated binary metrics of one batch from the model's positive-class ``score`` s.

    ``calibration`` is the champion's map (None: the scores are taken as calibrated); ``pred_pos`` whether
    the model predicted positive (default score > 0.5). ``rows`` scales the band when ``score`` is a sample of
    a larger batch. Returns {"metrics": {name: value}, "lower": {...}, "upper": {...}, "rows"}.
    """
    from airloop.model.calibration import apply_calibration

    score = np.asarray(score, dtype=float)
    pred = score > 0.5 if pred_pos is None else np.asarray(pred_pos, dtype=bool)
    prob = apply_calibration(calibration, score)
    acc = CBPEAccumulator()
    acc.update(score, prob, pred)
    point = acc.metrics()
    lower, upper = cbpe_band(score, prob, pred, point, rows=rows or score.size, seed=seed)
    return {"metrics": point, "lower": lower, "upper": upper, "rows": int(rows or score.size)}


def cbpe_band(
    score: np.ndarray, prob: np.ndarray, pred: np.ndarray, point: dict[str, float], *, rows: int, seed: int = 0
) -> tuple[dict[str, float], dict[str, float]]:
    """The 5th and 95th percentiles of the realized metrics when labels are drawn from ``prob``, on a sample
    of at most BAND_ROWS rows, the spread scaled by sqrt(sample / rows). All draws at once: the labels are a
    (draws x rows) matrix, and each metric is computed along its rows."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(score.size, size=BAND_ROWS, replace=False) if score.size > BAND_ROWS else slice(None)
    s, p, d = score[idx], prob[idx], pred[idx]
    Y = (rng.random((BAND_DRAWS, s.size)) < p).astype(float)
    draws = _metrics_of_draws(s, Y, d)
    scale = math.sqrt(s.size / max(rows, 1))
    lower, upper = {}, {}
    for name, value in point.items():
        values = draws[name][np.isfinite(draws[name])]
        if values.size < BAND_DRAWS // 2 or not math.isfinite(value):
            lower[name] = upper[name] = math.nan
            continue
        centre = float(np.mean(values))
        lo, hi = np.percentile(values, [5.0, 95.0])
        lower[name] = value - (centre - lo) * scale
        upper[name] = value + (hi - centre) * scale
    return lower, upper


def _metrics_of_draws(score: np.ndarray, Y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """The realized binary metrics of each row of the 0/1 label matrix ``Y`` (draws x rows), as
    :class:`CBPEAccumulator` computes them, for every draw at once."""
    b = np.clip((score * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1)
    order = np.argsort(b, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(b[order]) != 0])
    pos = np.add.reduceat(Y[:, order], starts, axis=1)  # (draws, occupied bins), ascending score
    neg = np.diff(np.r_[starts, score.size])[None, :] - pos
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    n = score.size
    with np.errstate(invalid="ignore", divide="ignore"):
        below = np.cumsum(neg, axis=1) - neg
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
        tp_desc = np.cumsum(pos[:, ::-1], axis=1)
        fp_desc = np.cumsum(neg[:, ::-1], axis=1)
        precision = np.where(tp_desc + fp_desc > 0, tp_desc / (tp_desc + fp_desc), 0.0)
        ap = (pos[:, ::-1] * precision).sum(axis=1) / total_pos
        predf = pred.astype(float)
        tp = Y @ predf
        fp = predf.sum() - tp
        fn = total_pos - tp
        tn = n - predf.sum() - fn
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    sc = np.clip(score, _EPS, 1 - _EPS)
    log_loss = -(Y @ np.log(sc) + (1.0 - Y) @ np.log1p(-sc)) / n
    brier = (Y @ (1.0 - score) ** 2 + (1.0 - Y) @ score**2) / n
    return {"roc_auc": auc, "pr_auc": ap, "accuracy": (tp + tn) / n, "f1": f1, "log_loss": log_loss, "brier": brier}


# --- regression: direct loss estimation --------------------------------------------------------------------


class LossModel:
    """DLE: two gradient-boosting models of the champion's absolute and squared error, learned on the holdout
    from the champion's own preprocessed features and its prediction."""

    def __init__(self, model: Any, holdout: pd.DataFrame, target: str, *, seed: int = 0) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.model = model
        X = self._design(holdout.drop(columns=[target], errors="ignore"))
        err = holdout[target].to_numpy(dtype=float) - np.asarray(model.predict(holdout), dtype=float)
        self.holdout_rows = len(holdout)
        params = {"max_iter": 100, "learning_rate": 0.05, "max_leaf_nodes": 15, "random_state": seed}
        self.abs_model = HistGradientBoostingRegressor(**params).fit(X, np.abs(err))
        self.sq_model = HistGradientBoostingRegressor(**params).fit(X, err**2)

    def _design(self, frame: pd.DataFrame) -> np.ndarray:
        pred = np.asarray(self.model.predict(frame), dtype=float)[:, None]
        prep = getattr(self.model, "named_steps", {}).get("prep")
        if prep is None:
            return pred
        return np.hstack([np.asarray(prep.transform(frame), dtype=float), pred])

    def estimate(self, frame: pd.DataFrame) -> dict[str, Any]:
        """{"metrics": {"rmse","mae"}, "lower", "upper", "rows"} of ``frame`` (features only)."""
        X = self._design(frame)
        abs_err = np.clip(self.abs_model.predict(X), 0, None)
        sq_err = np.clip(self.sq_model.predict(X), 0, None)
        n = max(len(frame), 1)
        mae, mse = float(abs_err.mean()), float(sq_err.mean())
        rmse = math.sqrt(mse)
        # The sampling spread of a batch of n rows, from the per-row expected losses (delta method for RMSE).
        se_mae = float(abs_err.std()) / math.sqrt(n)
        se_rmse = float(sq_err.std()) / math.sqrt(n) / (2 * rmse) if rmse > 0 else 0.0
        z = 1.645
        return {
            "metrics": {"rmse": rmse, "mae": mae},
            "lower": {"rmse": max(rmse - z * se_rmse, 0.0), "mae": max(mae - z * se_mae, 0.0)},
            "upper": {"rmse": rmse + z * se_rmse, "mae": mae + z * se_mae},
            "rows": len(frame),
        }


# --- one batch, overall and per segment ---------------------------------------------------------------------


def estimate_batch(
    task: str,
    metric: str,
    current: pd.DataFrame,
    segment_columns: list[str],
    *,
    score: np.ndarray | None = None,
    pred_pos: np.ndarray | None = None,
    calibration: dict | None = None,
    loss_model: LossModel | None = None,
    reference_value: float | None = None,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The estimated ``metric`` of ``current`` overall and per segment; None when it cannot be estimated
    (a multiclass classifier, or a metric CBPE/DLE does not cover).

    Classification needs the champion's positive-class ``score`` per row of ``current`` (and ``pred_pos``);
    regression a fitted :class:`LossModel`. Returns {"method", "metric", "value", "lower", "upper", "rows",
    "metrics" (every estimated metric), "reference_value" (the champion's holdout value), "calibration",
    "segments": [{"column", "value", "rows", "estimate", "lower", "upper", "judged"}]}; a segment is
    estimated only with at least MIN_SLICE_ROWS rows, the gate's rule for slices.
    """
    from airloop.model.gate import MIN_SLICE_ROWS, segment_labels

    if metric not in ESTIMATED[task]:
        return None
    if task == "classification":
        if score is None:
            return None
        score = np.asarray(score, dtype=float)
        pred_pos = score > 0.5 if pred_pos is None else np.asarray(pred_pos, dtype=bool)

        def run(mask: np.ndarray | None) -> dict[str, Any]:
            if mask is None:
                return cbpe(score, calibration, pred_pos, seed=seed)
            return cbpe(score[mask], calibration, pred_pos[mask], seed=seed)

        method = "cbpe"
    else:
        if loss_model is None:
            return None

        def run(mask: np.ndarray | None) -> dict[str, Any]:
            return loss_model.estimate(current if mask is None else current[mask])

        method = "dle"
    overall = run(None)
    segments = []
    for column in segment_columns:
        if column not in current.columns:
            continue
        labels = segment_labels(current, column).to_numpy()
        for value in sorted(set(labels)):
            mask = labels == value
            rows = int(mask.sum())
            entry: dict[str, Any] = {"column": column, "value": str(value), "rows": rows, "judged": False}
            entry["estimate"] = entry["lower"] = entry["upper"] = None
            if rows >= MIN_SLICE_ROWS:
                got = run(mask)
                entry.update(
                    estimate=_finite(got["metrics"][metric]),
                    lower=_finite(got["lower"][metric]),
                    upper=_finite(got["upper"][metric]),
                    judged=True,
                )
            segments.append(entry)
    return {
        "method": method,
        "metric": metric,
        "value": _finite(overall["metrics"][metric]),
        "lower": _finite(overall["lower"][metric]),
        "upper": _finite(overall["upper"][metric]),
        "rows": overall["rows"],
        "metrics": {k: _finite(v) for k, v in overall["metrics"].items()},
        "reference_value": reference_value,
        "calibration": (calibration or {}).get("method") if task == "classification" else None,
        "segments": segments,
    }


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
