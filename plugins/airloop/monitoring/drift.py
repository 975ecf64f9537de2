"""Data and prediction drift: a current batch compared with a reference sample, feature by feature.

``compute_drift(reference, current, numeric, categorical, cfg)`` returns a :class:`DriftReport`. Each feature
gets a Population Stability Index (PSI), a two-sample test (KS for numeric, chi-squared for categorical), the
Jensen-Shannon distance for categorical features, a status, and the binned shares the HTML report plots.

PSI decides the status, the test is supporting evidence: on batches of thousands of rows a KS or chi-squared
p-value is tiny for shifts nobody would act on, while PSI measures the size of the shift, not its certainty.
``confirm_drift`` turns daily statuses into a retraining decision; ``render_html`` writes a standalone page.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from airloop.config import MonitoringConfig

Status = Literal["ok", "warn", "alert"]

PSI_EPSILON = 1e-4  # floor for an empty bin's share, so log(0) never happens
MISSING_LABEL = "(missing)"
OTHER_LABEL = "(other)"
MAX_PLOTTED_CATEGORIES = 20  # categories beyond these are summed into "(other)" for the plots
_EXACT_KS_MAX_N = 10_000  # below this scipy's exact KS distribution is cheap; above, Smirnov's asymptotic
_PARALLEL_MIN_ROWS = 200_000  # below this, threads cost more than they save


class _Missing:
    """The one key every kind of missing value (None, NaN, NA, NaT) is counted under."""

    def __repr__(self) -> str:
        return MISSING_LABEL


_MISSING = _Missing()


@dataclass
class FeatureDrift:
    """One feature (or the prediction) compared: its PSI, test, status and the binned shares behind them.

    ``bins`` are the reference-quantile bins of a numeric feature or the categories of a categorical one,
    with ``"(missing)"`` last when either side has missing values; ``ref_share`` and ``cur_share`` are the
    shares of rows per bin (each sums to 1). ``test`` is ``"ks"`` or ``"chi2"``; ``statistic`` its value.
    ``p_value`` and ``statistic`` are NaN when one side has no non-missing values.
    """

    feature: str
    kind: Literal["numeric", "categorical"]
    psi: float
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    js: float | None
    status: Status
    bins: list[str] = field(default_factory=list)
    ref_share: list[float] = field(default_factory=list)
    cur_share: list[float] = field(default_factory=list)


@dataclass
class DriftReport:
    """Every feature's drift, the prediction's drift (if scored), and the batch-level decision.

    ``drifted_features`` lists the alerting features by PSI, largest first; ``share_drifted`` is their share
    of all features; ``status`` is the batch's status under the config ``compute_drift`` was given.
    """

    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    n_reference: int
    n_current: int
    drifted_features: list[str]
    share_drifted: float
    status: Status

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types (NaN becomes None)."""
        return _json_safe(asdict(self))

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow: ``drift_psi_<feature>``, ``drift_share`` and ``prediction_psi``."""
        out = {f"drift_psi_{_metric_name(f.feature)}": f.psi for f in self.features}
        out["drift_share"] = self.share_drifted
        if self.prediction is not None:
            out["prediction_psi"] = self.prediction.psi
        return out

    def summary(self, top: int = 5) -> str:
        """A few readable lines: the status, the rows compared, and the features that moved most."""
        n = len(self.features)
        head = f"{self.status.upper()}: {len(self.drifted_features)} of {n} features drifted"
        by_name = {f.feature: f for f in self.features}
        if self.drifted_features:
            named = [f"{name} (PSI {by_name[name].psi:.2f})" for name in self.drifted_features[:top]]
            more = len(self.drifted_features) - top
            head += ": " + ", ".join(named) + (f" and {more} more" if more > 0 else "")
        lines = [head, f"  rows: reference {self.n_reference}, current {self.n_current}"]
        warned = sorted((f for f in self.features if f.status == "warn"), key=lambda f: -f.psi)
        if warned:
            named = [f"{f.feature} (PSI {f.psi:.2f}, {f.test} p={f.p_value:.2g})" for f in warned[:top]]
            more = len(warned) - top
            lines.append("  warn: " + ", ".join(named) + (f" and {more} more" if more > 0 else ""))
        if self.prediction is not None:
            p = self.prediction
            lines.append(f"  prediction {p.feature}: PSI {p.psi:.2f} ({p.status})")
        if not self.drifted_features and not warned and self.features:
            worst = max(self.features, key=lambda f: f.psi)
            lines.append(f"  largest PSI: {worst.feature} ({worst.psi:.3f})")
        return "\n".join(lines)


# --- the metrics, one distribution pair at a time -------------------------------------------------------


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of a numeric feature on ``bins`` reference-quantile bins; missing values are a bin of their own.

    Bin edges are the reference's quantiles, deduplicated (a feature with few distinct values gets fewer
    bins); values outside the reference range fall into the end bins; empty bins count as ``PSI_EPSILON``.
    """
    ref_sorted, ref_missing = _sorted_non_missing(reference)
    cur_sorted, cur_missing = _sorted_non_missing(current)
    _, ref_share, cur_share = _numeric_bins(ref_sorted, ref_missing, cur_sorted, cur_missing, bins)
    return _psi(ref_share, cur_share)


def psi_categorical(reference: Sequence[Any] | pd.Series, current: Sequence[Any] | pd.Series) -> float:
    """PSI over the union of categories; categories unseen in the reference and missing values count."""
    _, ref_counts, cur_counts = _category_table(_category_counts(reference), _category_counts(current))
    return _psi(_shares(ref_counts), _shares(cur_counts))


def ks_test(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value) on non-missing values; NaNs if a side has none."""
    ref_sorted, _ = _sorted_non_missing(reference)
    cur_sorted, _ = _sorted_non_missing(current)
    return _ks_sorted(ref_sorted, cur_sorted)


def chi2_test(reference: Sequence[Any] | pd.Series, current: Sequence[Any] | pd.Series) -> tuple[float, float]:
    """Pearson chi-squared (statistic, p-value) of the 2 x k table of category counts, missing as a category.

    A contingency test rather than "current against reference proportions", because the reference is a
    sample too, and a category the reference never saw has no expected count to divide by.
    """
    _, ref_counts, cur_counts = _category_table(_category_counts(reference), _category_counts(current))
    return _chi2_counts(ref_counts, cur_counts)


def jensen_shannon(reference: Sequence[Any] | pd.Series, current: Sequence[Any] | pd.Series) -> float:
    """Jensen-Shannon distance (base 2, between 0 and 1) of the two category distributions."""
    _, ref_counts, cur_counts = _category_table(_category_counts(reference), _category_counts(current))
    return _js(ref_counts, cur_counts)


def feature_status(psi: float, p_value: float, cfg: MonitoringConfig) -> Status:
    """``alert`` at PSI >= psi_alert, ``warn`` at PSI >= psi_warn or a test p-value < ks_pvalue, else ``ok``.

    PSI decides: the p-value of a large batch is tiny for shifts too small to matter, so a significant test
    with a small PSI only warns.
    """
    if psi >= cfg.psi_alert:
        return "alert"
    if psi >= cfg.psi_warn or p_value < cfg.ks_pvalue:  # NaN p-values compare False
        return "warn"
    return "ok"


# --- the report -------------------------------------------------------------------------------------------


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    cfg: MonitoringConfig,
    prediction_column: str | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference`` on the given numeric and categorical columns (and prediction).

    Raises ValueError when either frame is empty or lacks one of the columns. The prediction column is
    numeric when its dtype is numeric (scores, probabilities) and categorical otherwise (class labels).
    Batch status: ``alert`` when a feature alerts and the alerting share reaches ``cfg.min_drifted_share``,
    or when the prediction alerts; ``warn`` when anything warns or alerts; else ``ok``.
    """
    for name, frame in (("reference", reference), ("current", current)):
        if len(frame) == 0:
            raise ValueError(
                f"drift check: the {name} frame is empty (0 rows); expected rows with columns "
                f"{[*numeric, *categorical]}"
            )
    wanted = [*numeric, *categorical, *([prediction_column] if prediction_column else [])]
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ValueError(
                f"drift check: column(s) {missing} missing from the {name} frame "
                f"(found columns: {sorted(map(str, frame.columns))})"
            )

    jobs: list[Callable[[], FeatureDrift]] = []
    for col in numeric:
        jobs.append(lambda c=col: _numeric_drift(c, reference[c], current[c], cfg))
    for col in categorical:
        jobs.append(lambda c=col: _categorical_drift(c, reference[c], current[c], cfg))
    if prediction_column:
        pred_ref, pred_cur = reference[prediction_column], current[prediction_column]
        is_score = pd.api.types.is_numeric_dtype(pred_ref) and not pd.api.types.is_bool_dtype(pred_ref)
        drift_of = _numeric_drift if is_score else _categorical_drift
        jobs.append(lambda: drift_of(prediction_column, pred_ref, pred_cur, cfg))

    # Sorting, searchsorted and value_counts release the GIL, so threads use every core on big batches.
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and len(reference) + len(current) >= _PARALLEL_MIN_ROWS:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drift") as pool:
            results = list(pool.map(lambda job: job(), jobs))
    else:
        results = [job() for job in jobs]

    features = results[: len(numeric) + len(categorical)]
    prediction = results[-1] if prediction_column else None
    alerting = sorted((f for f in features if f.status == "alert"), key=lambda f: -f.psi)
    share = len(alerting) / len(features) if features else 0.0
    statuses = [f.status for f in features] + ([prediction.status] if prediction else [])
    prediction_alerts = prediction is not None and prediction.status == "alert"
    if (alerting and share >= cfg.min_drifted_share) or prediction_alerts:
        status: Status = "alert"
    elif any(s != "ok" for s in statuses):
        status = "warn"
    else:
        status = "ok"
    return DriftReport(
        features=features,
        prediction=prediction,
        n_reference=len(reference),
        n_current=len(current),
        drifted_features=[f.feature for f in alerting],
        share_drifted=share,
        status=status,
    )


def confirm_drift(history: list[str], cfg: MonitoringConfig) -> bool:
    """True when the last ``cfg.confirm_days`` daily statuses (oldest first, today last) are all ``alert``."""
    recent = history[-cfg.confirm_days :]
    return len(recent) == cfg.confirm_days and all(s == "alert" for s in recent)


# --- internals: numeric ------------------------------------------------------------------------------------


def _numeric_drift(name: str, ref: pd.Series, cur: pd.Series, cfg: MonitoringConfig) -> FeatureDrift:
    ref_sorted, ref_missing = _sorted_non_missing(_as_float(ref, name, "reference"))
    cur_sorted, cur_missing = _sorted_non_missing(_as_float(cur, name, "current"))
    labels, ref_share, cur_share = _numeric_bins(ref_sorted, ref_missing, cur_sorted, cur_missing)
    psi = _psi(ref_share, cur_share)
    statistic, p_value = _ks_sorted(ref_sorted, cur_sorted)
    return FeatureDrift(
        feature=name,
        kind="numeric",
        psi=psi,
        test="ks",
        statistic=statistic,
        p_value=p_value,
        js=None,
        status=feature_status(psi, p_value, cfg),
        bins=labels,
        ref_share=ref_share.tolist(),
        cur_share=cur_share.tolist(),
    )


def _as_float(values: pd.Series, name: str, side: str) -> np.ndarray:
    try:
        return values.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        raise ValueError(
            f"drift check: numeric column {name!r} in the {side} frame holds non-numeric values "
            f"(dtype {values.dtype}); declare it categorical"
        ) from None


def _sorted_non_missing(values: Any) -> tuple[np.ndarray, int]:
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


def _numeric_bins(
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
    return labels, _shares(ref_counts), _shares(cur_counts)


def _ks_sorted(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
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


# --- internals: categorical --------------------------------------------------------------------------------


def _categorical_drift(name: str, ref: pd.Series, cur: pd.Series, cfg: MonitoringConfig) -> FeatureDrift:
    keys, ref_counts, cur_counts = _category_table(_category_counts(ref), _category_counts(cur))
    ref_share, cur_share = _shares(ref_counts), _shares(cur_counts)
    psi = _psi(ref_share, cur_share)
    statistic, p_value = _chi2_counts(ref_counts, cur_counts)
    labels = [MISSING_LABEL if k is _MISSING else str(k) for k in keys]
    if len(labels) > MAX_PLOTTED_CATEGORIES + 1:
        # Keep the categories that matter most on either side; sum the rest so the shares still add to 1.
        order = np.argsort(-np.maximum(ref_share, cur_share), kind="stable")
        keep, rest = np.sort(order[:MAX_PLOTTED_CATEGORIES]), order[MAX_PLOTTED_CATEGORIES:]
        labels = [labels[i] for i in keep] + [OTHER_LABEL]
        ref_plot = np.append(ref_share[keep], ref_share[rest].sum())
        cur_plot = np.append(cur_share[keep], cur_share[rest].sum())
    else:
        ref_plot, cur_plot = ref_share, cur_share
    return FeatureDrift(
        feature=name,
        kind="categorical",
        psi=psi,
        test="chi2",
        statistic=statistic,
        p_value=p_value,
        js=_js(ref_counts, cur_counts),
        status=feature_status(psi, p_value, cfg),
        bins=labels,
        ref_share=ref_plot.tolist(),
        cur_share=cur_plot.tolist(),
    )


def _category_counts(values: Sequence[Any] | pd.Series) -> dict[Hashable, int]:
    """Rows per category; every kind of missing value is counted under one key."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    counted = series.value_counts(dropna=False, sort=False)
    out: dict[Hashable, int] = {}
    for key, n in zip(counted.index.tolist(), counted.to_numpy().tolist(), strict=True):
        if n == 0:  # an unused level of a pandas Categorical
            continue
        if pd.api.types.is_scalar(key) and pd.isna(key):
            key = _MISSING
        out[key] = out.get(key, 0) + int(n)
    return out


def _category_table(
    ref: dict[Hashable, int], cur: dict[Hashable, int]
) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """The union of categories (reference's by count, then unseen, missing last) and both count vectors."""
    keys = sorted((k for k in ref if k is not _MISSING), key=lambda k: -ref[k])
    keys += sorted((k for k in cur if k not in ref and k is not _MISSING), key=lambda k: -cur[k])
    if _MISSING in ref or _MISSING in cur:
        keys.append(_MISSING)
    ref_counts = np.array([ref.get(k, 0) for k in keys], dtype=np.int64)
    cur_counts = np.array([cur.get(k, 0) for k in keys], dtype=np.int64)
    return keys, ref_counts, cur_counts


def _chi2_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return math.nan, math.nan
    if ref_counts.size < 2:  # one category on both sides: nothing can have moved
        return 0.0, 1.0
    result = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
    return float(result.statistic), float(result.pvalue)


def _js(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return math.nan
    return float(jensenshannon(ref_counts, cur_counts, base=2))


# --- internals: shared ----------------------------------------------------------------------------------


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def _psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    ref = np.maximum(ref_share, PSI_EPSILON)
    cur = np.maximum(cur_share, PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _metric_name(feature: str) -> str:
    """A feature name MLflow accepts as part of a metric key."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", str(feature))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- HTML report ------------------------------------------------------------------------------------------

_STATUS_COLOR = {"ok": "#2e7d32", "warn": "#ef6c00", "alert": "#c62828"}
_REF_COLOR = "#9e9e9e"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#212121}
h1{font-size:22px;margin:0 0 8px} h2{font-size:17px;margin:28px 0 8px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:13px}
.ok{background:#2e7d32}.warn{background:#ef6c00}.alert{background:#c62828}
table{border-collapse:collapse;font-size:13px} th,td{padding:4px 10px;border-bottom:1px solid #e0e0e0;
text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px;margin:8px 0}
dt{color:#616161} dd{margin:0} pre{background:#f5f5f5;padding:8px;font-size:12px;white-space:pre-wrap}
.plots{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0;border:1px solid #e0e0e0;padding:8px}
figcaption{font-size:13px;margin-bottom:4px} .legend{font-size:12px;color:#616161}
"""


def render_html(report: DriftReport, title: str, context: dict[str, Any] | None = None) -> str:
    """A self-contained HTML page (inline CSS and SVG, no scripts, no network) for one drift report.

    ``context`` is shown as key/value pairs under the title: pipeline, batch, model version, reference run.
    """
    esc = html.escape
    rows = sorted(report.features, key=lambda f: -f.psi)
    if report.prediction is not None:
        rows = [report.prediction, *rows]
    context_html = "".join(f"<dt>{esc(str(k))}</dt><dd>{esc(str(v))}</dd>" for k, v in (context or {}).items())
    table_rows = []
    for f in rows:
        label = f"{f.feature} (prediction)" if f is report.prediction else f.feature
        js = "" if f.js is None else _fmt(f.js, 3)
        table_rows.append(
            f"<tr><td>{esc(label)}</td><td>{f.kind}</td><td class='num'>{_fmt(f.psi, 3)}</td>"
            f"<td>{f.test}</td><td class='num'>{_fmt(f.statistic, 3)}</td>"
            f"<td class='num'>{_fmt_p(f.p_value)}</td><td class='num'>{js}</td>"
            f"<td><span class='badge {f.status}'>{f.status}</span></td></tr>"
        )
    plots = "".join(
        f"<figure><figcaption>{esc(f.feature)} &middot; PSI {_fmt(f.psi, 3)} "
        f"<span class='badge {f.status}'>{f.status}</span></figcaption>{_bars_svg(f)}</figure>"
        for f in rows
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{esc(title)} <span class="badge {report.status}">{report.status.upper()}</span></h1>
<dl>{context_html}<dt>rows</dt><dd>reference {report.n_reference}, current {report.n_current}</dd>
<dt>drifted</dt><dd>{len(report.drifted_features)} of {len(report.features)} features
({report.share_drifted:.0%})</dd></dl>
<pre>{esc(report.summary())}</pre>
<h2>Features by PSI</h2>
<table>
<tr><th>feature</th><th>kind</th><th>PSI</th><th>test</th><th>statistic</th><th>p-value</th><th>JS</th>
<th>status</th></tr>
{"".join(table_rows)}
</table>
<h2>Distributions</h2>
<p class="legend"><svg width="10" height="10"><rect width="10" height="10" fill="{_REF_COLOR}"/></svg>
reference &nbsp; <svg width="10" height="10"><rect width="10" height="10" fill="#1565c0"/></svg> current
(bar color follows the status); bins are reference quantiles for numeric features.</p>
<div class="plots">{plots}</div>
</body>
</html>
"""


def _bars_svg(f: FeatureDrift, width: int = 380, height: int = 170) -> str:
    """Paired bars per bin, reference grey and current in the status color, labels under the axis."""
    n = len(f.bins)
    if n == 0:
        return ""
    top, bottom, left = 8, 60, 40  # room for the rotated bin labels below and to the left
    plot_h = height - top - bottom
    slot = (width - left) / n
    bar_w = max(slot * 0.38, 1.0)
    peak = max([*f.ref_share, *f.cur_share, 1e-9])
    cur_color = _STATUS_COLOR[f.status] if f.status != "ok" else "#1565c0"
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(f.feature)}">']
    base = top + plot_h
    for i, (label, r, c) in enumerate(zip(f.bins, f.ref_share, f.cur_share, strict=True)):
        x = left + i * slot + slot * 0.1
        tip = html.escape(f"{label}: reference {r:.1%}, current {c:.1%}")
        for j, (share, color) in enumerate(((r, _REF_COLOR), (c, cur_color))):
            h = plot_h * share / peak
            parts.append(
                f'<rect x="{x + j * bar_w:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{tip}</title></rect>'
            )
        short = label if len(label) <= 12 else label[:11] + "…"
        cx = left + (i + 0.5) * slot
        parts.append(
            f'<text x="{cx:.1f}" y="{base + 10}" font-size="9" text-anchor="end" '
            f'transform="rotate(-40 {cx:.1f} {base + 10})">{html.escape(short)}</text>'
        )
    parts.append(f'<line x1="{left}" y1="{base}" x2="{width}" y2="{base}" stroke="#757575"/></svg>')
    return "".join(parts)


def _fmt(value: float, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_p(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.2g}"
