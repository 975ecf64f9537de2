"""Multivariate drift: the PCA reconstruction error of a batch against the reference's.

A change in how features move together (a correlation that flips, a combination that never occurred) can
leave every feature's own distribution, and so every PSI, unchanged. PCA fitted on the reference keeps the
directions the reference varies along (``VARIANCE_KEPT`` of its variance); rows of a batch whose joint
structure changed are reconstructed worse. The signal is the batch's mean reconstruction error.

Calibrated without any assumption on the errors' distribution (they are heavy-tailed): the PCA is fitted on
one half of the reference, the other half's errors are the no-drift pool, and a one-sided Mann-Whitney test
asks whether the batch's errors are larger than the pool's. Two-sample, so the pool's own noise counts;
exact in its level for any batch size, and streamable (each chunk's ranks in the sorted pool add up).

``ReconstructionDrift(reference, numeric, categorical)`` fits; ``.errors(frame)`` scores any chunk, so a
batch streams through it; ``.ranks(errors)`` summed over chunks and ``.test(u, error_sum, rows)`` give the p-value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

VARIANCE_KEPT = 0.65  # as NannyML's data reconstruction drift: enough to leave room for a changed structure
MAX_CATEGORIES = 20  # one-hot levels per categorical column (the rest share one column)
MAX_HALF_ROWS = 100_000  # reference rows fitting the PCA, and as many in the no-drift pool
ENCODE_ROWS = 1 << 17  # rows encoded at a time when scoring


class ReconstructionDrift:
    """PCA reconstruction error, fitted on half of ``reference``; the other half is the no-drift pool."""

    def __init__(self, reference: pd.DataFrame, numeric: list[str], categorical: list[str], *, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.numeric, self.categorical = list(numeric), list(categorical)
        self.seed = seed
        # At most MAX_HALF_ROWS rows per half: the axes and the pool's error distribution are settled long before
        # that, and a reference of millions of rows would otherwise cost seconds.
        order = rng.permutation(len(reference))[: 2 * MAX_HALF_ROWS]
        fit = reference.iloc[order[: len(order) // 2]]
        pool = reference.iloc[order[len(order) // 2 :]]
        self.medians = {c: float(np.nanmedian(_floats(fit[c]))) if fit[c].notna().any() else 0.0 for c in numeric}
        self.levels = {c: fit[c].astype("string").value_counts().index[:MAX_CATEGORIES].tolist() for c in categorical}
        X = self._encode(fit, standardize=False)
        self.mean = X.mean(axis=0)
        self.scale = X.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        Z = (X - self.mean) / self.scale
        # The principal axes from the (inputs x inputs) covariance: cheaper than an SVD of the rows.
        values, vectors = np.linalg.eigh(Z.T @ Z)
        values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
        share = np.cumsum(values) / max(float(np.sum(values)), 1e-12)
        k = int(np.searchsorted(share, VARIANCE_KEPT) + 1)
        self.components = vectors[:, : min(k, vectors.shape[1])].T
        self.pool_sorted = np.sort(self.errors(pool))

    def _encode(self, frame: pd.DataFrame, *, standardize: bool = True) -> np.ndarray:
        # One preallocated matrix: per numeric column its value (median for missing) and a missingness flag;
        # per categorical column one-hot of its levels plus "other" (missing included), set from the codes of
        # the distinct values, not by comparing every row's text with every level.
        n = len(frame)
        width = 2 * len(self.numeric) + sum(len(self.levels[c]) + 1 for c in self.categorical)
        X = np.zeros((n, width))
        at = 0
        for c in self.numeric:
            v = _floats(frame[c])
            missing = np.isnan(v)
            X[:, at] = np.where(missing, self.medians[c], v)
            X[:, at + 1] = missing  # missingness is part of the joint structure
            at += 2
        rows = np.arange(n)
        for c in self.categorical:
            levels = self.levels[c]
            codes, uniques = pd.factorize(frame[c], use_na_sentinel=True)
            where = pd.Index(levels).get_indexer(pd.Index(uniques).astype("string"))
            where = np.where(where >= 0, where, len(levels))  # unknown levels: "other"
            column = np.append(where, len(levels))[codes]  # code -1 (missing) picks the appended "other"
            X[rows, at + column] = 1.0
            at += len(levels) + 1
        if standardize:
            X -= self.mean
            X /= self.scale
        return X

    def errors(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's squared reconstruction error (standardized units)."""
        out = np.empty(len(frame))
        for start in range(0, len(frame), ENCODE_ROWS):  # bounded memory: the encoding is rows x inputs
            Z = self._encode(frame.iloc[start : start + ENCODE_ROWS])
            # The components are orthonormal, so |z - back|^2 = |z|^2 - |projection|^2.
            P = Z @ self.components.T
            out[start : start + len(Z)] = np.einsum("ij,ij->i", Z, Z) - np.einsum("ij,ij->i", P, P)
        return np.clip(out, 0.0, None, out=out)

    def ranks(self, errors: np.ndarray) -> float:
        """The Mann-Whitney count of a chunk's errors: per row, the pool errors below it (ties count half).
        Summed over chunks, it is the U statistic of the whole batch against the pool."""
        low = np.searchsorted(self.pool_sorted, errors, side="left")
        high = np.searchsorted(self.pool_sorted, errors, side="right")
        return float(low.sum() + 0.5 * (high - low).sum())

    def test(self, u: float, error_sum: float, rows: int) -> dict[str, Any]:
        """The one-sided test of a batch of ``rows`` rows: {"method", "statistic" (the batch's mean error),
        "reference" (the pool's), "auc" (the chance a batch row reconstructs worse than a reference row; 0.5
        when nothing changed), "p_value", "rows", "components", "inputs"}."""
        m = self.pool_sorted.size
        auc = u / (rows * m)
        sd = math.sqrt(rows * m * (rows + m + 1) / 12.0)
        p_value = float(stats.norm.sf((u - rows * m / 2.0) / sd)) if sd > 0 else 1.0
        return {
            "method": "pca_reconstruction",
            "statistic": error_sum / rows,
            "reference": float(self.pool_sorted.mean()),
            "auc": auc,
            "p_value": p_value,
            "rows": int(rows),
            "components": int(self.components.shape[0]),
            "inputs": int(self.components.shape[1]),
        }

    def compare(self, current: pd.DataFrame) -> dict[str, Any]:
        """The test of one in-memory batch."""
        err = self.errors(current)
        return self.test(self.ranks(err), float(err.sum()), len(current))


def _floats(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype="float64", na_value=np.nan)
