"""The drift statistics, one distribution pair at a time: PSI, Kolmogorov-Smirnov, chi-squared, Jensen-Shannon.

The public tests take two samples (arrays or sequences, missing values allowed). The count-level helpers
(``numeric_bins``, ``category_table``, ``ks_sorted``...) are what :mod:`airloop.monitoring.drift` builds each
feature's comparison from, so a feature is sorted and counted once for all of its statistics.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

PSI_EPSILON = 1e-4  # floor for an empty bin's share, so log(0) never happens
MISSING_LABEL = "(missing)"
_EXACT_KS_MAX_N = 10_000  # below this scipy's exact KS distribution is cheap; above, Smirnov's asymptotic


class _Missing:
    """The one key every kind of missing value (None, NaN, NA, NaT) is counted under."""

    def __repr__(self) -> str:
        return MISSING_LABEL


MISSING = _Missing()


# --- the metrics, one distribution pair at a time -------------------------------------------------------


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of a numeric feature on ``bins`` reference-quantile bins; missing values are a bin of their own.

    Bin edges are the reference's quantiles, deduplicated (a feature with few distinct values gets fewer
    bins); values outside the reference range fall into the end bins; empty bins count as ``PSI_EPSILON``.
    """
    ref_sorted, ref_missing = sorted_non_missing(reference)
    cur_sorted, cur_missing = sorted_non_missing(current)
    _, ref_share, cur_share = numeric_bins(ref_sorted, ref_missing, cur_sorted, cur_missing, bins)
    return psi_of_shares(ref_share, cur_share)


def psi_categorical(reference: Sequence[Any] | pd.Series, current: Sequence[Any] | pd.Series) -> float:
    """PSI over the union of categories; categories unseen in the reference and missing values count."""
    _, ref_counts, cur_counts = category_table(category_counts(reference), category_counts(current))
    return psi_of_shares(shares(ref_counts), shares(cur_counts))


def ks_test(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value) on non-missing values; NaNs if a side has none."""
    ref_sorted, _ = sorted_non_missing(reference)
    cur_sorted, _ = sorted_non_missing(current)
    return ks_sorted(ref_sorted, cur_sorted)


def chi2_test(reference: Sequence[Any] | pd.Series, current: Sequence[Any] | pd.Series) -> tuple[float, float]:
    """Pearson chi-squared (statistic, p-value) of the 2 x k table of category counts, missing as a category.

    A contingency test rather than "current against reference proportions", because the reference is a
    sample too, and a category the reference never saw has no expected count to divide by.
    """
    _, ref_counts, cur_counts = category_table(category_counts(reference), category_counts(current))
    return chi2_counts(ref_counts, cur_counts)


def jensen_shannon(reference: Sequence[Any] | pd.Series, current: Sequence[Any] | pd.Series) -> float:
    """Jensen-Shannon distance (base 2, between 0 and 1) of the two category distributions."""
    _, ref_counts, cur_counts = category_table(category_counts(reference), category_counts(current))
    return js_of_counts(ref_counts, cur_counts)


# --- numeric: sorting, quantile bins, KS -------------------------------------------------------------------


def sorted_non_missing(values: Any) -> tuple[np.ndarray, int]:
    """The non-NaN values sorted, and how many were NaN (np.sort puts NaNs last)."""
    arr = np.sort(np.asarray(values, dtype="float64"), axis=None)
    n_valid = int(np.searchsorted(arr, np.nan))
    return arr[:n_valid], arr.size - n_valid


def _quantiles_sorted(sorted_values: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """np.quantile's linear method on already sorted data, without partitioning again."""
    pos = probs * (sorted_values.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, sorted_values.size - 1)
    frac = pos - lo
    low, high = sorted_values[lo], sorted_values[hi]
    with np.errstate(invalid="ignore"):  # inf - inf where the tail is infinite
        return np.where(frac > 0, low + (high - low) * frac, low)


def numeric_bins(
    ref_sorted: np.ndarray, ref_missing: int, cur_sorted: np.ndarray, cur_missing: int, bins: int = 10
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bin labels and (reference, current) shares on reference-quantile bins ``(e[i-1], e[i]]``."""
    edges = np.empty(0)
    if ref_sorted.size:
        edges = _quantiles_sorted(ref_sorted, np.arange(1, bins) / bins)
        edges = np.unique(edges[~np.isnan(edges)])

    def counts(sorted_values: np.ndarray) -> np.ndarray:
        at_or_below = np.searchsorted(sorted_values, edges, side="right")
        return np.diff(np.concatenate(([0], at_or_below, [sorted_values.size])))

    ref_counts, cur_counts = counts(ref_sorted), counts(cur_sorted)
    if edges.size == 0:
        labels = ["all values"]
    else:
        text = [f"{e:.4g}" for e in edges]
        labels = [f"<= {text[0]}"] + [f"{a} to {b}" for a, b in zip(text, text[1:], strict=False)]
        labels.append(f"> {text[-1]}")
    if ref_missing or cur_missing:
        ref_counts = np.append(ref_counts, ref_missing)
        cur_counts = np.append(cur_counts, cur_missing)
        labels.append(MISSING_LABEL)
    return labels, shares(ref_counts), shares(cur_counts)


def ks_sorted(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS on sorted, NaN-free arrays; the same numbers as scipy.stats.ks_2samp.

    ks_2samp evaluates both ECDFs at all n1 + n2 points (two binary searches of n1 + n2 keys). Both
    extremes of F_ref - F_cur sit at current points: the largest just before one (#ref < x over n1, minus
    #cur < x over n2), the most negative at one (#cur <= x over n2, minus #ref <= x over n1). One binary
    search of the current values gives #ref <= x; #ref < x differs only where x also occurs in the
    reference, and only those values are searched again. Among equal current values, index j counts
    #cur < x exactly at the first and #cur <= x exactly at the last, which is where each extreme is.
    """
    n1, n2 = ref.size, cur.size
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    if max(n1, n2) <= _EXACT_KS_MAX_N:
        result = stats.ks_2samp(ref, cur, method="auto")
        return float(result.statistic), float(result.pvalue)
    ref_at_or_below = np.searchsorted(ref, cur, side="right")
    ref_below = ref_at_or_below
    in_ref = (ref_at_or_below > 0) & (ref[np.maximum(ref_at_or_below - 1, 0)] == cur)
    if in_ref.any():
        ref_below = ref_at_or_below.copy()
        ref_below[in_ref] = np.searchsorted(ref, cur[in_ref], side="left")
    # Integer numerators over n1 * n2 keep the comparison exact; in-place steps keep the temporaries few.
    cur_steps = np.arange(0, n2 * n1, n1, dtype=np.int64)  # j * n1
    work = np.multiply(ref_below, n2, dtype=np.int64)
    d_plus = int(np.subtract(work, cur_steps, out=work).max())
    np.multiply(ref_at_or_below, n2, out=work)
    d_minus = n1 + int(np.subtract(cur_steps, work, out=work).max())
    statistic = max(d_plus, d_minus, 0) / (n1 * n2)
    big, small = max(n1, n2), min(n1, n2)
    p_value = float(np.clip(stats.kstwo.sf(statistic, np.round(big * small / (big + small))), 0, 1))
    return statistic, p_value


# --- categorical: counts, contingency table, chi-squared, JS ------------------------------------------------


def category_counts(values: Sequence[Any] | pd.Series) -> dict[Hashable, int]:
    """Rows per category; every kind of missing value is counted under one key."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    counted = series.value_counts(dropna=False, sort=False)
    out: dict[Hashable, int] = {}
    for key, n in zip(counted.index.tolist(), counted.to_numpy().tolist(), strict=True):
        if n == 0:  # an unused level of a pandas Categorical
            continue
        if pd.api.types.is_scalar(key) and pd.isna(key):
            key = MISSING
        out[key] = out.get(key, 0) + int(n)
    return out


def category_table(ref: dict[Hashable, int], cur: dict[Hashable, int]) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """The union of categories (reference's by count, then unseen, missing last) and both count vectors."""
    keys = sorted((k for k in ref if k is not MISSING), key=lambda k: -ref[k])
    keys += sorted((k for k in cur if k not in ref and k is not MISSING), key=lambda k: -cur[k])
    if MISSING in ref or MISSING in cur:
        keys.append(MISSING)
    ref_counts = np.array([ref.get(k, 0) for k in keys], dtype=np.int64)
    cur_counts = np.array([cur.get(k, 0) for k in keys], dtype=np.int64)
    return keys, ref_counts, cur_counts


def chi2_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return math.nan, math.nan
    if ref_counts.size < 2:  # one category on both sides: nothing can have moved
        return 0.0, 1.0
    result = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
    return float(result.statistic), float(result.pvalue)


def js_of_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return math.nan
    return float(jensenshannon(ref_counts, cur_counts, base=2))


# --- shared: shares and PSI ----------------------------------------------------------------------------------


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def psi_of_shares(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    ref = np.maximum(ref_share, PSI_EPSILON)
    cur = np.maximum(cur_share, PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


# --- calibrated thresholds: PSI's null distribution at the batch's size ----------------------------------


def psi_null(ref_counts: np.ndarray, n_current: int, resamples: int, seed: int = 0) -> np.ndarray:
    """PSI of ``resamples`` no-drift pairs drawn at the real sizes: a reference of ``ref_counts.sum()`` rows
    and a batch of ``n_current`` rows, both multinomial from the reference's shares.

    Drawing the reference side too matters at large batches: a batch of 100,000 rows compared with a
    5,000-row reference mostly sees the reference's own sampling noise.
    """
    ref_counts = np.asarray(ref_counts, dtype=np.int64)
    n_ref = int(ref_counts.sum())
    if n_ref == 0 or n_current == 0 or ref_counts.size < 2:
        return np.zeros(resamples)
    rng = np.random.default_rng(seed)
    q = ref_counts / n_ref
    ref = rng.multinomial(n_ref, q, size=resamples) / n_ref
    cur = rng.multinomial(int(n_current), q, size=resamples) / int(n_current)
    ref, cur = np.maximum(ref, PSI_EPSILON), np.maximum(cur, PSI_EPSILON)
    return np.sum((cur - ref) * np.log(cur / ref), axis=1)


def resampled_p_value(observed: float, null: np.ndarray) -> float:
    """The share of the null at or above ``observed``, with the +1 correction (never exactly 0)."""
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (null.size + 1))
