"""airloop.model.conformal: split-conformal sets and intervals reach the declared coverage on rows the model never
saw, and the sets are MAPIE's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from airloop.model.conformal import (
    calibrate_and_measure,
    conformal_threshold,
    nonconformity,
    prediction_sets,
    uncertainty,
)


def classification_data(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    logit = X[:, 0] - 0.7 * X[:, 1] + 0.3 * X[:, 2]
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return X, y


@pytest.fixture(scope="module")
def classifier():
    X, y = classification_data(2000, 0)
    model = LogisticRegression().fit(X, y)
    Xh, yh = classification_data(8000, 1)  # the holdout: never trained on
    scored = {"y_pred": model.predict(Xh), "y_proba": model.predict_proba(Xh), "classes": model.classes_}
    return model, Xh, yh, scored


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_classification_coverage_on_the_holdout_is_within_2_points_of_the_declared_level(classifier, coverage):
    _, _, yh, scored = classifier
    got = calibrate_and_measure("classification", yh, scored, coverage, seed=42)
    assert got["calibration_rows"] == got["test_rows"] == 4000
    assert abs(got["coverage_measured"] - coverage) <= 0.02, got
    assert 1.0 <= got["mean_set_size"] <= 2.0


@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_regression_interval_coverage_is_within_2_points(coverage):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(9000, 3))
    y = 2 * X[:, 0] - X[:, 1] + rng.standard_t(df=4, size=9000)  # heavy-tailed noise: no Gaussian shortcut
    model = LinearRegression().fit(X[:1000], y[:1000])
    got = calibrate_and_measure("regression", y[1000:], {"y_pred": model.predict(X[1000:])}, coverage, seed=1)
    assert abs(got["coverage_measured"] - coverage) <= 0.02, got
    assert got["mean_interval_width"] == pytest.approx(2 * got["threshold"])


def test_the_sets_are_mapies_split_conformal_lac_sets(classifier):
    from mapie.classification import SplitConformalClassifier

    model, Xh, yh, scored = classifier
    calib, test = slice(0, 3000), slice(3000, None)
    mapie = SplitConformalClassifier(model, confidence_level=0.9, conformity_score="lac", prefit=True)
    mapie.conformalize(Xh[calib], yh[calib])
    _, mapie_sets = mapie.predict_set(Xh[test])
    threshold = conformal_threshold(
        nonconformity("classification", yh[calib], {**scored, "y_proba": scored["y_proba"][calib]}), 0.9
    )
    ours = prediction_sets(scored["y_proba"][test], threshold)
    assert (ours == mapie_sets[:, :, 0]).mean() > 0.999  # equal but for float ties at the threshold


def test_served_rows_carry_their_set_or_interval():
    proba = np.array([[0.95, 0.05], [0.55, 0.45]])
    rows = uncertainty("classification", ["no", "no"], proba, np.array(["no", "yes"]), threshold=0.6)
    assert rows == [{"prediction_set": ["no"]}, {"prediction_set": ["no", "yes"]}]
    assert uncertainty("regression", [1.0], None, None, 0.5) == [{"interval": [0.5, 1.5]}]


def test_too_few_rows_for_the_coverage_give_an_infinite_threshold_or_a_skip():
    assert conformal_threshold(np.array([0.1, 0.2, 0.3]), 0.9) == float("inf")
    got = calibrate_and_measure("regression", np.zeros(10), {"y_pred": np.zeros(10)}, 0.9, seed=0)
    assert "skipped" in got and "need 20" in got["skipped"]
