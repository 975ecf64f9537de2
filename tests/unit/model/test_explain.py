"""airloop.model.explain: SHAP contributions per raw column add up to the model's output, and the global importance
finds the columns the label depends on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airloop.config import CandidateConfig
from airloop.model.candidates import build_pipeline


def make_frame(n=500, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], n),
            "color_code": rng.choice(["a", "b"], n),  # a column whose name starts like another's one-hot column
        }
    )
    X.loc[::13, "color"] = None
    X.loc[::17, "x1"] = np.nan
    y = ((X["x1"].fillna(0) + (X["color"] == "red") * 1.5 + rng.normal(scale=0.5, size=n)) > 0.5).astype(int)
    return X, y


@pytest.fixture(scope="module")
def logistic():
    X, y = make_frame()
    cand = CandidateConfig(name="lr", estimator="logistic_regression", params={"max_iter": 500})
    model = build_pipeline(cand, ["x1", "noise"], ["color", "color_code"], 0, task="classification").fit(X, y)
    return model, X


def test_shap_values_sum_to_the_prediction_minus_the_expected_value_on_the_logistic_candidate(logistic):
    from airloop.model.explain import Explainer

    model, X = logistic
    explainer = Explainer(model, X)
    assert explainer.kind == "linear"
    rows = X.tail(60)
    values, expected = explainer.explain(rows)
    assert values.shape == (60, 4)  # one contribution per raw column, one-hot columns summed back
    log_odds = model.decision_function(rows)
    np.testing.assert_allclose(values.sum(axis=1), log_odds - expected, atol=1e-9)
    # and through the probability the model serves
    p = model.predict_proba(rows)[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-(expected + values.sum(axis=1)))), p, atol=1e-9)


def test_global_importance_ranks_the_signal_columns_first(logistic):
    from airloop.model.explain import Explainer, global_importance

    model, X = logistic
    ranked = [d["feature"] for d in global_importance(Explainer(model, X), X)]
    assert set(ranked[:2]) == {"x1", "color"} and set(ranked[2:]) == {"noise", "color_code"}


@pytest.mark.parametrize(("estimator", "task"), [("hist_gradient_boosting", "classification"), ("ridge", "regression")])
def test_contributions_add_up_for_trees_and_regression(estimator, task):
    from airloop.model.explain import Explainer

    X, y = make_frame(300, seed=1)
    target = y if task == "classification" else X["x1"].fillna(0) * 3 + y
    cand = CandidateConfig(name="c", estimator=estimator)
    model = build_pipeline(cand, ["x1", "noise"], ["color", "color_code"], 0, task=task).fit(X, target)
    explainer = Explainer(model, X)
    values, expected = explainer.explain(X.head(40))
    np.testing.assert_allclose(values.sum(axis=1) + expected, explainer.output(X.head(40)), atol=1e-6)


def test_top_contributions_name_the_column_its_value_and_sign(logistic):
    from airloop.model.explain import Explainer, top_contributions

    model, X = logistic
    row = X[(X["color"] == "red") & (X["x1"] > 1)].head(1)
    got = top_contributions(Explainer(model, X), row, top=2)[0]
    assert {c["feature"] for c in got["contributions"]} == {"x1", "color"}
    red = next(c for c in got["contributions"] if c["feature"] == "color")
    assert red["value"] == "red" and red["contribution"] > 0
