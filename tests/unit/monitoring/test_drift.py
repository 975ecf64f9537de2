"""Drift metrics and the drift report on tiny seeded frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from airloop.config import MonitoringConfig
from airloop.errors import BadInput
from airloop.monitoring.drift import compute_drift, confirm_drift
from airloop.monitoring.report import render_html
from airloop.monitoring.statistics import chi2_test, jensen_shannon, ks_test, psi_categorical, psi_numeric

CFG = MonitoringConfig()
NUMERIC = ["tenure", "monthly_charges", "total_charges"]
CATEGORICAL = ["contract", "internet"]


def churn_like(seed: int, n: int = 2000, charges_shift: float = 0.0, month_share: float = 0.7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "monthly_charges": rng.normal(70 + 20 * charges_shift, 20, n),  # std 20: shift is in stds
            "total_charges": rng.gamma(2.0, 1000.0, n),
            "contract": rng.choice(["month", "year"], n, p=[month_share, 1 - month_share]),
            "internet": rng.choice(["dsl", "fiber", "none"], n, p=[0.4, 0.4, 0.2]),
            "score": rng.beta(2, 5, n),
        }
    )


def test_identical_batches_do_not_drift():
    ref = churn_like(0)
    report = compute_drift(ref, ref.copy(), NUMERIC, CATEGORICAL, CFG, prediction_column="score")
    assert report.status == "ok"
    assert report.drifted_features == [] and report.share_drifted == 0.0
    for f in [*report.features, report.prediction]:
        assert f.psi == pytest.approx(0.0, abs=1e-12)
        assert f.status == "ok"
        assert sum(f.ref_share) == pytest.approx(1.0) and f.ref_share == pytest.approx(f.cur_share)
    assert report.summary().startswith("OK: 0 of 5 features drifted")


def test_two_samples_of_one_distribution_stay_below_warn():
    report = compute_drift(churn_like(0), churn_like(1), NUMERIC, CATEGORICAL, CFG)
    assert max(f.psi for f in report.features) < CFG.psi_warn
    assert report.drifted_features == []


def test_mean_shift_of_one_std_alerts_on_that_feature_only():
    report = compute_drift(churn_like(0), churn_like(1, charges_shift=1.0), NUMERIC, CATEGORICAL, CFG)
    by_name = {f.feature: f for f in report.features}
    assert by_name["monthly_charges"].status == "alert"
    assert by_name["monthly_charges"].psi >= CFG.psi_alert
    assert by_name["monthly_charges"].p_value < 1e-6
    assert [f.feature for f in report.features if f.status == "alert"] == ["monthly_charges"]
    assert report.drifted_features == ["monthly_charges"]
    assert report.status == "alert"
    assert report.share_drifted == pytest.approx(1 / 5)
    summary = report.summary()
    assert summary.startswith("ALERT: 1 of 5 features drifted: monthly_charges (PSI ")
    assert "total_charges" not in summary.splitlines()[0]


def test_category_share_change_alerts_with_positive_js():
    report = compute_drift(churn_like(0), churn_like(1, month_share=0.3), NUMERIC, CATEGORICAL, CFG)
    contract = next(f for f in report.features if f.feature == "contract")
    assert contract.kind == "categorical" and contract.test == "chi2"
    assert contract.status == "alert" and report.drifted_features == ["contract"]
    assert contract.js is not None and contract.js > 0.2
    assert contract.p_value < 1e-6
    assert contract.bins == ["month", "year"]
    assert contract.ref_share[0] == pytest.approx(0.7, abs=0.03)
    assert contract.cur_share[0] == pytest.approx(0.3, abs=0.03)


def test_unseen_category_in_current_counts():
    ref = pd.Series(["a"] * 50 + ["b"] * 50)
    cur = pd.Series(["a"] * 40 + ["b"] * 40 + ["c"] * 20)
    assert psi_categorical(ref, cur) >= CFG.psi_alert
    assert psi_categorical(ref, ref) == 0.0
    assert jensen_shannon(ref, cur) > 0 and jensen_shannon(ref, ref) == 0.0
    statistic, p_value = chi2_test(ref, cur)
    assert statistic > 0 and p_value < CFG.ks_pvalue
    report = compute_drift(ref.to_frame("x"), cur.to_frame("x"), [], ["x"], CFG)
    x = report.features[0]
    assert x.bins == ["a", "b", "c"]
    assert x.ref_share[2] == 0.0 and x.cur_share[2] == pytest.approx(0.2)


def test_jump_in_missing_values_is_caught_by_psi():
    rng = np.random.default_rng(7)
    ref = rng.normal(size=2000)
    cur = rng.normal(size=2000)
    ref[:40] = np.nan  # 2% missing
    cur[:600] = np.nan  # 30% missing, the rest unchanged
    assert psi_numeric(ref, cur) >= CFG.psi_alert
    assert ks_test(ref, cur)[1] > CFG.ks_pvalue  # the non-missing values did not move
    report = compute_drift(pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur}), ["x"], [], CFG)
    assert report.features[0].status == "alert"
    assert report.features[0].bins[-1] == "(missing)"
    assert report.features[0].cur_share[-1] == pytest.approx(0.3)
    cats_ref = pd.Series(["a", "b"] * 500)
    cats_cur = pd.Series(["a", "b"] * 350 + [None] * 300)
    assert psi_categorical(cats_ref, cats_cur) >= CFG.psi_alert


def test_values_beyond_the_reference_range_land_in_the_end_bins():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 1, 1000)
    assert psi_numeric(ref, ref + 5.0) >= CFG.psi_alert
    assert psi_numeric(ref, ref) == 0.0


def _integers(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 30, 20_000).astype(float), rng.integers(1, 31, 15_000).astype(float)


def _partly_shared(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ref = rng.normal(size=20_000)
    return ref, np.concatenate([rng.normal(0.03, 1, 14_000), ref[:1000]])


@pytest.mark.parametrize("samples", [_integers, _partly_shared])
def test_ks_matches_scipy_on_large_samples(samples):
    ref, cur = samples(np.random.default_rng(11))
    expected = stats.ks_2samp(ref, cur)
    statistic, p_value = ks_test(ref, cur)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_min_drifted_share_turns_a_lone_alert_into_a_warning():
    cfg = MonitoringConfig(min_drifted_share=0.5)
    report = compute_drift(churn_like(0), churn_like(1, charges_shift=1.0), NUMERIC, CATEGORICAL, cfg)
    assert report.drifted_features == ["monthly_charges"]
    assert report.status == "warn"


def test_prediction_drift_alone_alerts():
    ref, cur = churn_like(0), churn_like(1)
    cur["score"] = np.clip(cur["score"] + 0.3, 0, 1)
    report = compute_drift(ref, cur, NUMERIC, CATEGORICAL, CFG, prediction_column="score")
    assert report.drifted_features == []
    assert report.prediction is not None and report.prediction.status == "alert"
    assert report.status == "alert"
    assert report.metrics()["prediction_psi"] == report.prediction.psi


def test_metrics_and_dict_are_flat_and_json_able():
    ref, cur = churn_like(0), churn_like(1)
    ref["empty"] = np.nan
    cur["empty"] = np.nan
    report = compute_drift(ref, cur, [*NUMERIC, "empty"], CATEGORICAL, CFG)
    metrics = report.metrics()
    assert set(metrics) == {f"drift_psi_{c}" for c in [*NUMERIC, "empty", *CATEGORICAL]} | {
        "drift_share",
        "drift_multivariate_error",
        "drift_multivariate_p",
    }
    assert all(isinstance(v, float) for v in metrics.values())
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    empty = next(f for f in data["features"] if f["feature"] == "empty")
    assert empty["p_value"] is None  # no non-missing values to test
    assert data["n_current"] == 2000 and data["status"] == "ok"


@pytest.mark.parametrize(
    ("history", "confirm_days", "confirmed"),
    [
        (["ok", "alert"], 2, False),
        (["alert", "alert"], 2, True),
        (["alert", "ok", "alert"], 2, False),
        (["warn", "alert", "alert"], 2, True),
        (["alert"], 2, False),
        (["alert", "alert"], 3, False),
        (["alert"], 1, True),
    ],
)
def test_confirm_drift_needs_consecutive_alerting_days(history, confirm_days, confirmed):
    assert confirm_drift(history, MonitoringConfig(confirm_days=confirm_days)) is confirmed


def test_missing_column_is_named():
    ref = churn_like(0)
    cur = ref.drop(columns=["contract"])
    with pytest.raises(BadInput, match=r"\['contract'\] missing from the current frame.*found columns"):
        compute_drift(ref, cur, NUMERIC, CATEGORICAL, CFG)
    with pytest.raises(BadInput, match="'prediction'.*missing from the reference frame"):
        compute_drift(ref, ref, NUMERIC, CATEGORICAL, CFG, prediction_column="prediction")


def test_empty_current_batch_is_an_error():
    ref = churn_like(0)
    with pytest.raises(BadInput, match=r"current frame is empty.*'contract'"):
        compute_drift(ref, ref.iloc[:0], NUMERIC, CATEGORICAL, CFG)


def test_render_html_is_self_contained_and_names_every_feature():
    report = compute_drift(
        churn_like(0), churn_like(1, charges_shift=1.0), NUMERIC, CATEGORICAL, CFG, prediction_column="score"
    )
    context = {"pipeline": "churn", "batch": "2026-01-05", "model version": "3", "note": "<b>x</b>"}
    page = render_html(report, "Drift: churn", context)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for name in [*NUMERIC, *CATEGORICAL, "score", "2026-01-05"]:
        assert name in page
    assert page.count("<svg") >= len(NUMERIC) + len(CATEGORICAL) + 1
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    table = page.split("<h2>Features by PSI</h2>")[1]
    assert table.index("monthly_charges") < table.index("tenure")  # sorted by PSI


def test_text_in_a_numeric_column_is_bad_input_naming_the_column():
    ref = churn_like(0)
    cur = ref.assign(tenure=["n/a"] * len(ref))
    with pytest.raises(BadInput, match=r"numeric column 'tenure' in the current frame.*declare it categorical"):
        compute_drift(ref, cur, NUMERIC, CATEGORICAL, CFG)
