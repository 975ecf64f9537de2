"""Drift alarms calibrated to the batch's size, and the multivariate (PCA reconstruction) signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airloop.config import MonitoringConfig
from airloop.monitoring.drift import compute_drift
from airloop.monitoring.statistics import psi_null

FALSE_ALARM_RATE = 0.05
NUMERIC = ["tenure", "charges", "usage", "calls"]
CATEGORICAL = ["contract", "region"]


def population(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """One fixed population: skewed, discrete, missing values and categories, as production data has them."""
    charges = rng.gamma(3.0, 20.0, n)
    charges[rng.random(n) < 0.03] = np.nan
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "charges": charges,
            "usage": rng.lognormal(2.0, 0.8, n),
            "calls": rng.poisson(2.0, n),
            "contract": rng.choice(["month", "year", "two_year"], n, p=[0.5, 0.3, 0.2]),
            "region": rng.choice(["n", "s", "e", "w"], n),
            "score": rng.beta(2, 5, n),
        }
    )


@pytest.mark.parametrize(("rows", "batches"), [(100, 200), (1000, 100), (100_000, 20)])
def test_no_drift_batches_alarm_at_most_at_the_false_alarm_rate(rows, batches):
    """Fresh batches from the reference's own population, at three sizes: the batch-level alert rate stays
    within monitoring.false_alarm_rate. (The fixed PSI rule is size-blind: see the next test.)"""
    rng = np.random.default_rng(rows)
    reference = population(rng, 5000)
    cfg = MonitoringConfig(false_alarm_rate=FALSE_ALARM_RATE)
    alarms = 0
    for _ in range(batches):
        report = compute_drift(reference, population(rng, rows), NUMERIC, CATEGORICAL, cfg, prediction_column="score")
        alarms += report.status == "alert"
    assert alarms / batches <= FALSE_ALARM_RATE, f"{alarms} alarms in {batches} no-drift batches of {rows} rows"


def test_the_alert_threshold_follows_the_batch_size():
    """The PSI that alerts is larger for small batches (noise) and shrinks towards the reference's own noise."""
    counts = np.full(10, 500)
    q = {n: np.quantile(psi_null(counts, n, 2000), 0.99) for n in (100, 1000, 100_000)}
    assert q[100] > 0.1 > q[1000] > q[100_000]  # the fixed 0.1 warn rule fires on most n=100 batches ...
    assert q[100_000] > 10 / 5000 * 0.5  # ... and the reference's 5,000 rows bound how small it gets


def test_a_real_shift_alerts_at_every_size():
    rng = np.random.default_rng(1)
    reference = population(rng, 5000)
    for rows in (300, 5000, 100_000):
        current = population(rng, rows)
        current["usage"] = current["usage"] * 1.6
        report = compute_drift(reference, current, NUMERIC, CATEGORICAL, MonitoringConfig())
        assert report.drifted_features == ["usage"], (rows, report.summary())
        assert report.status == "alert"


def test_the_multivariate_signal_fires_on_a_joint_shift_no_single_psi_flags():
    """x and y move together in the reference and against each other in the batch; each one's distribution
    is the same, so every PSI stays below its (calibrated) alert threshold."""
    rng = np.random.default_rng(2)

    def frame(n: int, sign: float) -> pd.DataFrame:
        x = rng.normal(size=n)
        y = sign * 0.9 * x + np.sqrt(1 - 0.81) * rng.normal(size=n)
        return pd.DataFrame({"x": x, "y": y, "z": rng.normal(size=n), "kind": rng.choice(["a", "b"], n)})

    reference, current = frame(5000, 1.0), frame(2000, -1.0)
    report = compute_drift(reference, current, ["x", "y", "z"], ["kind"], MonitoringConfig())
    assert report.drifted_features == []
    assert all(f.status != "alert" and f.psi < f.psi_threshold for f in report.features)
    assert report.multivariate["alert"] and report.multivariate["p_value"] < report.alpha
    assert report.status == "alert"
    assert "multivariate (PCA reconstruction error)" in report.summary()
    same = compute_drift(reference, frame(2000, 1.0), ["x", "y", "z"], ["kind"], MonitoringConfig())
    assert not same.multivariate["alert"] and same.status != "alert"


def test_fixed_thresholds_remain_available():
    rng = np.random.default_rng(3)
    reference, current = population(rng, 5000), population(rng, 100_000)
    current["usage"] = current["usage"] * 1.05  # real, but small: PSI far below 0.25
    calibrated = compute_drift(reference, current, NUMERIC, CATEGORICAL, MonitoringConfig())
    fixed = compute_drift(reference, current, NUMERIC, CATEGORICAL, MonitoringConfig(thresholds="fixed"))
    assert fixed.status != "alert" and fixed.thresholds == "fixed"
    assert calibrated.thresholds == "calibrated" and np.isfinite(calibrated.features[2].psi_threshold)
