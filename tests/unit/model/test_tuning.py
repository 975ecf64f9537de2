"""airloop.model.tuning: Optuna TPE over the YAML search space, pruning over CV folds, one nested MLflow run per
trial; the random search stays available."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold

from airloop.config import CandidateConfig, parse_pipeline


@pytest.fixture(scope="module")
def store(mlflow_store):
    return mlflow_store


def make_frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(4)})
    frame["y"] = (frame["x0"] + 0.5 * frame["x1"] + rng.normal(scale=0.7, size=n) > 0).astype(int)
    return frame


def make_cfg(name, search="optuna", space=None, n_iter=6):
    cand = {"name": "lr", "estimator": "logistic_regression", "params": {"max_iter": 300}}
    cand["search_space"] = space if space is not None else {"C": {"low": 0.001, "high": 100.0, "log": True}}
    return parse_pipeline(
        {
            "name": name,
            "source": {"uri": "file:///nowhere/*.csv"},
            "target": "y",
            "task": "classification",
            "training": {"n_iter": n_iter, "cv_folds": 3, "search": search, "candidates": [cand]},
        }
    )


def test_optuna_trials_appear_as_nested_runs_of_the_candidate_run(store):
    from mlflow.tracking import MlflowClient

    from airloop.model.train import prepare_split, train_candidate

    cfg = make_cfg("tune_nested")
    split = prepare_split(cfg, make_frame(), (store / "tune").as_uri())
    result = train_candidate(cfg, "lr", split)
    client = MlflowClient()
    parent = client.get_run(result["run_id"])
    assert parent.data.params["search"] == "optuna"
    trials = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'"
    )
    assert len(trials) == 6
    assert {t.data.tags["airloop.stage"] for t in trials} == {"tune"}
    assert sorted(int(t.data.tags["airloop.trial"]) for t in trials) == list(range(6))
    for t in trials:
        assert 0.001 <= float(t.data.params["C"]) <= 100.0
        assert 0.5 < t.data.metrics["cv_roc_auc"] <= 1.0
    complete = [t for t in trials if t.data.tags["airloop.trial_state"] == "complete"]
    best = max(t.data.metrics["cv_roc_auc"] for t in complete)
    assert result["cv_score"] == pytest.approx(best)
    assert float(parent.data.params["C"]) == pytest.approx(
        float(next(t for t in complete if t.data.metrics["cv_roc_auc"] == best).data.params["C"])
    )


def test_the_median_pruner_stops_trials_that_fall_behind_after_a_fold():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from airloop.model.tuning import optuna_search

    frame = make_frame(n=400, seed=1)
    X, y = frame.drop(columns="y"), frame["y"]
    model = Pipeline([("model", LogisticRegression(max_iter=300))])
    # tiny C is much worse (a near-constant model); TPE keeps sampling the whole range, so some trials prune
    cand = CandidateConfig(name="lr", estimator="logistic_regression", search_space={"C": {"low": 1e-6, "high": 10.0}})
    cv = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    fitted, best, score, trials = optuna_search(model, cand, X, y, cv, "neg_log_loss", 20, seed=0)
    states = [t["state"] for t in trials]
    assert len(trials) == 20 and "pruned" in states, states
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert all(len(t["fold_scores"]) < 4 for t in pruned)
    assert all(len(t["fold_scores"]) == 4 for t in trials if t["state"] == "complete")
    assert score == max(t["value"] for t in trials if t["state"] == "complete")
    assert fitted.named_steps["model"].C == best["C"]


def test_a_small_list_space_is_searched_exhaustively_and_seeded():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from airloop.model.tuning import optuna_search

    frame = make_frame()
    X, y = frame.drop(columns="y"), frame["y"]
    model = Pipeline([("model", LogisticRegression(max_iter=300))])
    cand = CandidateConfig(name="lr", estimator="logistic_regression", search_space={"C": [0.01, 0.1, 1.0]})
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    runs = [optuna_search(model, cand, X, y, cv, "roc_auc", 10, seed=3) for _ in range(2)]
    assert sorted(t["params"]["C"] for t in runs[0][3]) == [0.01, 0.1, 1.0]  # the grid, once each
    assert runs[0][1] == runs[1][1] and runs[0][2] == runs[1][2]


def test_random_search_stays_available_and_logs_no_trials(store):
    from mlflow.tracking import MlflowClient

    from airloop.model.train import prepare_split, train_candidate

    cfg = make_cfg("tune_random", search="random", n_iter=3)
    split = prepare_split(cfg, make_frame(), (store / "random").as_uri())
    result = train_candidate(cfg, "lr", split)
    client = MlflowClient()
    parent = client.get_run(result["run_id"])
    assert parent.data.params["search"] == "random" and 0.001 <= float(parent.data.params["C"]) <= 100
    nested = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'"
    )
    assert nested == []


def test_an_empty_range_is_refused_with_the_key_and_values():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from airloop.errors import BadInput
    from airloop.model.candidates import search_space

    cand = CandidateConfig(name="lr", estimator="logistic_regression", search_space={"C": {"low": 5, "high": 1}})
    with pytest.raises(BadInput, match=r"search_space.C: expected low < high .* found low=5, high=1"):
        search_space(cand, Pipeline([("model", LogisticRegression())]))
