"""Data and prediction drift: a current batch compared with a reference sample, feature by feature.

``compute_drift(reference, current, numeric, categorical, cfg)`` returns a :class:`DriftReport`. Each feature
gets a Population Stability Index (PSI), a two-sample test (KS for numeric, chi-squared for categorical), the
Jensen-Shannon distance for categorical features, a status, and the binned shares the HTML report plots.

PSI decides the status, the test is supporting evidence: on batches of thousands of rows a KS or chi-squared
p-value is tiny for shifts nobody would act on, while PSI measures the size of the shift, not its certainty.
``confirm_drift`` turns daily statuses into a retraining decision. The statistics themselves are in
:mod:`airloop.monitoring.statistics`; the HTML page is :func:`airloop.monitoring.report.render_html`.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from airloop.config import MonitoringConfig
from airloop.errors import BadInput
from airloop.monitoring.statistics import (
    MISSING,
    MISSING_LABEL,
    category_counts,
    category_table,
    chi2_counts,
    js_of_counts,
    ks_sorted,
    numeric_bins,
    psi_null,
    psi_of_shares,
    resampled_p_value,
    shares,
    sorted_non_missing,
)

Status = Literal["ok", "warn", "alert"]

OTHER_LABEL = "(other)"
MAX_PLOTTED_CATEGORIES = 20  # categories beyond these are summed into "(other)" for the plots
_PARALLEL_MIN_ROWS = 200_000  # below this, threads cost more than they save
MIN_MULTIVARIATE_ROWS = 100  # each half of the reference (PCA fit, no-drift pool) needs at least this many


class DriftInputError(BadInput):
    """Frames that cannot be compared (empty, a column missing, a numeric column holding text); the message
    names the frame and the column."""


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
    psi_p_value: float = math.nan  # share of no-drift resamples at this batch's size with a PSI this large
    psi_threshold: float = math.nan  # the PSI that alerts at this batch's size (calibrated thresholds)
    ref_counts: list[int] = field(default_factory=list, repr=False)  # rows per bin, for the resampled null


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
    thresholds: str = "fixed"  # "calibrated": from no-drift resamples at the batch's size; "fixed": psi_alert
    alpha: float = math.nan  # calibrated: the per-test level (false_alarm_rate over the number of tests)
    multivariate: dict[str, Any] | None = None  # PCA reconstruction error test, see monitoring.multivariate

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types (NaN becomes None)."""
        return _json_safe(asdict(self))

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow: ``drift_psi_<feature>``, ``drift_share`` and ``prediction_psi``."""
        out = {f"drift_psi_{_metric_name(f.feature)}": f.psi for f in self.features}
        out["drift_share"] = self.share_drifted
        if self.prediction is not None:
            out["prediction_psi"] = self.prediction.psi
        if self.multivariate is not None:
            out["drift_multivariate_error"] = self.multivariate["statistic"]
            out["drift_multivariate_p"] = self.multivariate["p_value"]
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
        if self.multivariate is not None:
            m = self.multivariate
            verdict = "ALERT" if m.get("alert") else "ok"
            lines.append(
                f"  multivariate (PCA reconstruction error): {m['statistic']:.3f} vs reference "
                f"{m['reference']:.3f}, p={m['p_value']:.2g} ({verdict})"
            )
        if self.thresholds == "calibrated":
            lines.append(
                f"  thresholds calibrated to {self.n_current} rows: each test alerts at p < {self.alpha:.2g} "
                "(no-drift resamples of the reference at this size)"
            )
        if not self.drifted_features and not warned and self.features:
            worst = max(self.features, key=lambda f: f.psi)
            lines.append(f"  largest PSI: {worst.feature} ({worst.psi:.3f})")
        return "\n".join(lines)


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
    prediction_reference: pd.Series | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference`` on the given numeric and categorical columns (and prediction).

    Raises DriftInputError (a BadInput) when either frame is empty or lacks one of the columns, or when a
    numeric column holds text. The prediction column is numeric when its dtype is numeric (scores,
    probabilities) and categorical otherwise (class labels). ``prediction_reference``, when given, is what the
    batch's predictions are compared with instead of ``reference[prediction_column]``: predictions on rows the
    model did not train on (its holdout), since in-sample scores are more confident than any new batch's.
    Batch status: ``alert`` when a feature alerts and the alerting share reaches ``cfg.min_drifted_share``,
    or when the prediction alerts; ``warn`` when anything warns or alerts; else ``ok``.
    """
    for name, frame in (("reference", reference), ("current", current)):
        if len(frame) == 0:
            raise DriftInputError(
                f"drift check: the {name} frame is empty (0 rows); expected rows with columns "
                f"{[*numeric, *categorical]}"
            )
    wanted = [*numeric, *categorical, *([prediction_column] if prediction_column else [])]
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise DriftInputError(
                f"drift check: column(s) {missing} missing from the {name} frame "
                f"(found columns: {sorted(map(str, frame.columns))})"
            )

    jobs: list[Callable[[], FeatureDrift]] = []
    for col in numeric:
        jobs.append(lambda c=col: _numeric_drift(c, reference[c], current[c], cfg))
    for col in categorical:
        jobs.append(lambda c=col: _categorical_drift(c, reference[c], current[c], cfg))
    if prediction_column:
        pred_ref = reference[prediction_column] if prediction_reference is None else prediction_reference
        pred_cur = current[prediction_column]
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
    multivariate = None
    if cfg.multivariate and len(features) >= 2 and len(reference) >= 2 * MIN_MULTIVARIATE_ROWS:
        from airloop.monitoring.multivariate import ReconstructionDrift

        multivariate = ReconstructionDrift(reference, numeric, categorical).compare(current)
    # One family of tests per batch: each at false_alarm_rate / tests keeps the batch's false-alarm rate
    # at most false_alarm_rate (Bonferroni).
    alpha = cfg.false_alarm_rate / (len(results) + (multivariate is not None))
    if cfg.thresholds == "calibrated":
        for f in results:
            calibrate_status(f, len(current), alpha, cfg)
    if multivariate is not None:
        multivariate["alert"] = multivariate["p_value"] < alpha
    alerting = sorted((f for f in features if f.status == "alert"), key=lambda f: -f.psi)
    share = len(alerting) / len(features) if features else 0.0
    statuses = [f.status for f in features] + ([prediction.status] if prediction else [])
    prediction_alerts = prediction is not None and prediction.status == "alert"
    # The joint signal decides only when no feature alerts: a marginal shift also raises the reconstruction
    # error, and then min_drifted_share must still apply.
    joint_alerts = multivariate is not None and multivariate["alert"] and not alerting
    if (alerting and share >= cfg.min_drifted_share) or prediction_alerts or joint_alerts:
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
        thresholds=cfg.thresholds,
        alpha=alpha,
        multivariate=multivariate,
    )


def calibrate_status(f: FeatureDrift, n_current: int, alpha: float, cfg: MonitoringConfig) -> None:
    """Set ``f``'s status from its PSI's null distribution at ``n_current`` rows: ``alert`` when the
    resampled p-value is below ``alpha``, ``warn`` below ``cfg.false_alarm_rate`` (or a test p-value below
    ``ks_pvalue``), else ``ok``; records the p-value and the PSI that would alert at this size."""
    null = psi_null(np.asarray(f.ref_counts), n_current, cfg.null_resamples, seed=zlib.crc32(str(f.feature).encode()))
    f.psi_p_value = resampled_p_value(f.psi, null)
    f.psi_threshold = float(np.quantile(null, 1.0 - alpha))
    if f.psi_p_value < alpha:
        f.status = "alert"
    elif f.psi_p_value < cfg.false_alarm_rate or f.p_value < cfg.ks_pvalue:
        f.status = "warn"
    else:
        f.status = "ok"


def confirm_drift(history: list[str], cfg: MonitoringConfig) -> bool:
    """True when the last ``cfg.confirm_days`` daily statuses (oldest first, today last) are all ``alert``."""
    recent = history[-cfg.confirm_days :]
    return len(recent) == cfg.confirm_days and all(s == "alert" for s in recent)


# --- internals: numeric ------------------------------------------------------------------------------------


def _numeric_drift(name: str, ref: pd.Series, cur: pd.Series, cfg: MonitoringConfig) -> FeatureDrift:
    ref_sorted, ref_missing = sorted_non_missing(_as_float(ref, name, "reference"))
    cur_sorted, cur_missing = sorted_non_missing(_as_float(cur, name, "current"))
    labels, ref_share, cur_share = numeric_bins(ref_sorted, ref_missing, cur_sorted, cur_missing)
    ref_counts = np.rint(ref_share * (ref_sorted.size + ref_missing)).astype(np.int64)
    psi = psi_of_shares(ref_share, cur_share)
    statistic, p_value = ks_sorted(ref_sorted, cur_sorted)
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
        ref_counts=ref_counts.tolist(),
    )


def _as_float(values: pd.Series, name: str, side: str) -> np.ndarray:
    try:
        return values.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        raise DriftInputError(
            f"drift check: numeric column {name!r} in the {side} frame holds non-numeric values "
            f"(dtype {values.dtype}); declare it categorical"
        ) from None


# --- internals: categorical --------------------------------------------------------------------------------


def _categorical_drift(name: str, ref: pd.Series, cur: pd.Series, cfg: MonitoringConfig) -> FeatureDrift:
    keys, ref_counts, cur_counts = category_table(category_counts(ref), category_counts(cur))
    ref_share, cur_share = shares(ref_counts), shares(cur_counts)
    psi = psi_of_shares(ref_share, cur_share)
    statistic, p_value = chi2_counts(ref_counts, cur_counts)
    labels = [MISSING_LABEL if k is MISSING else str(k) for k in keys]
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
        js=js_of_counts(ref_counts, cur_counts),
        status=feature_status(psi, p_value, cfg),
        bins=labels,
        ref_share=ref_plot.tolist(),
        cur_share=cur_plot.tolist(),
        ref_counts=ref_counts.tolist(),
    )


# --- internals: MLflow and JSON ---------------------------------------------------------------------------


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
