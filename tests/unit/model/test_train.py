"""airloop.model.train, .candidates and .metrics: the split, the candidate pipelines, the metrics, one MLflow run per
candidate, the choice of the best."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.configs import pipeline_cfg

from airloop.config import CandidateConfig
from airloop.data.datasets import fingerprint
from airloop.errors import BadInput
from airloop.store import lake as lk
from airloop.store.lake import BATCH_COLUMN

LR = {"name": "lr", "estimator": "logistic_regression", "params": {"max_iter": 300}, "search_space": {"C": [0.1, 1.0]}}


@pytest.fixture(scope="module")
def store(mlflow_store):
    """The module's MLflow store (tests/conftest.py: mlflow_store)."""
    return mlflow_store


def make_cfg(name="t", task="classification", **overrides):
    keys = {"id_column": None, "event_time_column": None, "training": {"n_iter": 2, "cv_folds": 3, "candidates": [LR]}}
    return pipeline_cfg(name=name, target="y", task=task, **{**keys, **overrides})


def make_frame(n=300, seed=0, kind="binary"):
    """Numeric + categorical features with NaN/None; the target depends on x1 and the category."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "n_int": rng.integers(0, 5, n),
            "color": rng.choice(["red", "green", "blue"], n),
        }
    )
    signal = frame["x1"] + (frame["color"] == "red") * 1.5 + rng.normal(scale=0.5, size=n)
    if kind == "binary":
        frame["y"] = (signal > 0.5).astype(int)
    elif kind == "multiclass":
        frame["y"] = pd.cut(signal, [-np.inf, 0.0, 1.0, np.inf], labels=["low", "mid", "high"]).astype(str)
    else:
        frame["y"] = 3.0 * signal + 10.0
    frame.loc[::17, "x1"] = np.nan
    frame.loc[::13, "color"] = None
    return frame


# ---------------------------------------------------------------------------------------------- pipeline


def test_candidate_names_are_the_yaml_candidates_else_the_task_defaults():
    from airloop.model.candidates import candidate_names

    assert candidate_names(make_cfg()) == ["lr"]
    training = {"n_iter": 2, "cv_folds": 3}
    assert candidate_names(make_cfg(training=training)) == [
        "logistic_regression",
        "random_forest",
        "hist_gradient_boosting",
    ]
    assert candidate_names(make_cfg(task="regression", training=training)) == [
        "ridge",
        "random_forest",
        "hist_gradient_boosting",
    ]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_default_candidate_scores_raw_rows_with_unseen_category_and_nan(task):
    from airloop.model.candidates import build_pipeline, default_candidates

    frame = make_frame(kind="binary" if task == "classification" else "regression")
    X, y = frame.drop(columns="y"), frame["y"]
    raw = pd.DataFrame(
        {
            "x1": [np.nan, 0.3, 1.0],
            "x2": [0.1, np.nan, 2.0],
            "n_int": [1, 2, 3],
            # an unseen category, a missing one, and pandas' nullable string dtype with pd.NA
            "color": pd.array(["purple", pd.NA, "red"], dtype="string"),
        }
    )
    for cand in default_candidates(task):
        model = build_pipeline(cand, ["x1", "x2", "n_int"], ["color"], seed=0, task=task).fit(X, y)
        assert list(model.feature_names_in_) == ["x1", "x2", "n_int", "color"]
        pred = model.predict(raw)
        assert len(pred) == 3
        if task == "classification":
            proba = model.predict_proba(raw)
            assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1.0)
        else:
            assert np.isfinite(pred).all()
    # object and bool-with-None categorical columns are accepted too
    raw_obj = raw.assign(color=pd.Series(["red", None, True], dtype=object))
    assert len(model.predict(raw_obj)) == 3


def test_estimator_seeded_and_full_import_path():
    from airloop.model.candidates import build_pipeline

    cand = CandidateConfig(name="tree", estimator="sklearn.tree.DecisionTreeClassifier", params={"max_depth": 3})
    model = build_pipeline(cand, ["x1"], [], seed=7)
    assert type(model.named_steps["model"]).__name__ == "DecisionTreeClassifier"
    assert model.named_steps["model"].random_state == 7


def test_unknown_estimator_names_candidate_and_what_was_expected():
    from airloop.model.candidates import build_pipeline

    with pytest.raises(BadInput, match=r"candidate 'mystery'.*unknown estimator 'xgb_magic'.*expected"):
        build_pipeline(CandidateConfig(name="mystery", estimator="xgb_magic"), ["x1"], [], seed=0)
    with pytest.raises(BadInput, match=r"candidate 'ghost'.*'nope\.Missing' cannot be imported"):
        build_pipeline(CandidateConfig(name="ghost", estimator="nope.Missing"), ["x1"], [], seed=0)
    with pytest.raises(BadInput, match=r"'ridge' is defined for \['regression'\]"):
        build_pipeline(CandidateConfig(name="r", estimator="ridge"), ["x1"], [], seed=0, task="classification")


# ------------------------------------------------------------------------------------------------- split


def test_time_aware_split_puts_the_latest_rows_in_test(tmp_path):
    from airloop.model.train import prepare_split

    frame = make_frame(n=200)
    frame["event_time"] = pd.date_range("2026-01-01", periods=200, freq="h")
    frame = frame.sample(frac=1.0, random_state=1)  # time order must not depend on row order
    cfg = make_cfg(event_time_column="event_time")
    split = prepare_split(cfg, frame, tmp_path.as_uri())
    train, test = lk.read_parquet(split["train_uri"]), lk.read_parquet(split["test_uri"])
    assert split["split"] == "time"
    assert train["event_time"].max() < test["event_time"].min()
    assert (split["n_train"], split["n_test"]) == (160, 40)
    assert split["fingerprint"] == fingerprint(frame.reset_index(drop=True))
    assert (split["numeric"], split["categorical"]) == (["x1", "x2", "n_int"], ["color"])


def test_batch_id_orders_time_when_there_is_no_event_time(tmp_path):
    from airloop.model.train import prepare_split

    frame = make_frame(n=200)
    frame[BATCH_COLUMN] = np.repeat([f"2026-01-{d:02d}" for d in range(1, 11)], 20)
    split = prepare_split(make_cfg(), frame, tmp_path.as_uri())
    test = lk.read_parquet(split["test_uri"])
    assert split["split"] == "time"
    assert sorted(test[BATCH_COLUMN].unique()) == ["2026-01-09", "2026-01-10"]
    assert BATCH_COLUMN not in split["numeric"] + split["categorical"]


def test_stratified_split_and_reference_sample_otherwise(tmp_path):
    from airloop.model.train import prepare_split

    frame = make_frame(n=300)
    cfg = make_cfg(monitoring={"reference_rows": 100})
    split = prepare_split(cfg, frame, tmp_path.as_uri())
    train, test = lk.read_parquet(split["train_uri"]), lk.read_parquet(split["test_uri"])
    assert split["split"] == "stratified"
    assert abs(train["y"].mean() - test["y"].mean()) < 0.02
    reference = lk.read_parquet(split["reference_uri"])
    assert len(reference) == 100 and split["reference_uri"].endswith("/reference.parquet")
    assert set(reference.columns) == set(frame.columns)
    # the same seed gives the same split
    again = prepare_split(cfg, frame, (tmp_path / "again").as_uri())
    pd.testing.assert_frame_equal(lk.read_parquet(again["test_uri"]), test)

    regression = prepare_split(make_cfg(task="regression"), make_frame(kind="regression"), tmp_path.as_uri())
    assert regression["split"] == "random"


def test_too_few_rows_or_a_single_class_name_the_target(tmp_path):
    from airloop.model.train import prepare_split, train_candidate

    with pytest.raises(BadInput, match=r"at least 20 labeled rows in target column 'y', found 10"):
        prepare_split(make_cfg(), make_frame(n=10), tmp_path.as_uri())
    one_class = make_frame(n=50).assign(y=1)
    with pytest.raises(BadInput, match=r"two classes in target column 'y', found a single class 1 in 50 rows"):
        prepare_split(make_cfg(), one_class, tmp_path.as_uri())
    rare = make_frame(n=50).assign(y=[1] * 48 + [0] * 2)
    with pytest.raises(BadInput, match=r"class 0 of target column 'y' has 2 training rows; training.cv_folds=3"):
        train_candidate(make_cfg(), "lr", prepare_split(make_cfg(), rare, tmp_path.as_uri()))
    with pytest.raises(BadInput, match=r"target column 'y' is not in the training data"):
        prepare_split(make_cfg(), make_frame(n=50).drop(columns="y"), tmp_path.as_uri())


# ---------------------------------------------------------------------------------------------- metrics


def test_compute_metrics_and_directions():
    from airloop.model.metrics import METRIC_DIRECTIONS, compute_metrics, greater_is_better

    y = np.array([0, 0, 1, 1])
    proba = np.array([0.1, 0.4, 0.35, 0.8])
    m = compute_metrics("classification", y, (proba > 0.5).astype(int), np.column_stack([1 - proba, proba]))
    assert m["roc_auc"] == pytest.approx(0.75) and m["accuracy"] == pytest.approx(0.75)
    assert set(m) == {"roc_auc", "pr_auc", "f1", "log_loss", "brier", "accuracy"}
    assert m["brier"] == pytest.approx(np.mean((proba - y) ** 2))
    # a 1-D probability is the positive class's
    assert compute_metrics("classification", y, (proba > 0.5).astype(int), proba) == m
    r = compute_metrics("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    assert r["rmse"] == pytest.approx(np.sqrt(4 / 3)) and r["mae"] == pytest.approx(2 / 3)
    assert not greater_is_better("rmse") and not greater_is_better("log_loss") and greater_is_better("roc_auc")
    assert {k for k, v in METRIC_DIRECTIONS.items() if v == "min"} == {"rmse", "mae", "log_loss", "brier"}


# ---------------------------------------------------------------------------------------- MLflow runs


@pytest.fixture(scope="module")
def binary_split(store):
    from airloop.model.train import prepare_split

    return prepare_split(make_cfg(), make_frame(n=300), (store / "split").as_uri())


def test_train_candidate_logs_one_reproducible_run(store, binary_split):
    import mlflow
    from mlflow.tracking import MlflowClient

    from airloop.model.train import train_candidate
    from airloop.store import tracking

    cfg = make_cfg()
    tracking.configure_mlflow()
    client = MlflowClient()
    parent = client.create_run(tracking.ensure_experiment(cfg)).info.run_id
    info = {"dag_id": "airloop_t_train", "run_id": "manual__1", "try_number": 1, "map_index": 0}
    first = train_candidate(cfg, "lr", binary_split, run_info=info, parent_run_id=parent)
    second = train_candidate(cfg, "lr", binary_split)

    # same data and seed: the same numbers
    assert first["cv_score"] == second["cv_score"]
    assert first["test_metrics"] == second["test_metrics"]
    assert first["run_id"] != second["run_id"]
    assert set(first["test_metrics"]) == {"roc_auc", "pr_auc", "f1", "log_loss", "brier", "accuracy"}
    assert first["test_metrics"]["roc_auc"] > 0.8
    assert (first["primary_metric"], first["greater_is_better"]) == ("roc_auc", True)
    assert first["model_uri"].startswith("models:/") and first["serialization"] == "skops"
    assert "cv_roc_auc = " in first["summary"] and first["run_url"] in first["summary"]
    assert first["run_url"].endswith(f"/runs/{first['run_id']}")

    run = client.get_run(first["run_id"])
    assert run.info.experiment_id == tracking.ensure_experiment(cfg)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["mlflow.parentRunId"] == parent
    assert tags["airloop.stage"] == "train" and tags["airloop.candidate"] == "lr"
    assert tags["airflow.dag_id"] == "airloop_t_train" and tags["airflow.try_number"] == "1"
    assert tags["airloop.train_uri"] == binary_split["train_uri"]
    assert tags["airloop.test_uri"] == binary_split["test_uri"]
    assert tags["airloop.reference_uri"] == binary_split["reference_uri"]
    assert tags["airloop.data_fingerprint"] == binary_split["fingerprint"]
    assert len(tags["airloop.git_sha"]) in (40, len("unknown")) and len(tags["airloop.uv_lock_sha256"]) == 64
    assert params["candidate"] == "lr" and params["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert params["C"] in ("0.1", "1.0")
    assert metrics["cv_roc_auc"] == pytest.approx(first["cv_score"])
    assert metrics["test_roc_auc"] == pytest.approx(first["test_metrics"]["roc_auc"])
    sources = {d.dataset.name: d.dataset.source for d in run.inputs.dataset_inputs}
    assert binary_split["train_uri"] in sources["train"] and binary_split["test_uri"] in sources["test"]

    # the artifact: skops, minimal pinned requirements, scores raw rows in a pyfunc
    local = mlflow.artifacts.download_artifacts(first["model_uri"])
    reqs = open(f"{local}/requirements.txt").read().split()
    assert {r.split("==")[0] for r in reqs} == {"mlflow", "scikit-learn", "pandas", "numpy", "skops"}
    assert all("==" in r for r in reqs)
    assert "serialization_format: skops" in open(f"{local}/MLmodel").read()
    model = mlflow.pyfunc.load_model(first["model_uri"])
    raw = pd.DataFrame({"x1": [np.nan], "x2": [0.0], "n_int": [np.nan], "color": ["never-seen"]})
    assert len(model.predict(raw)) == 1
    # an integer column is accepted as int64 and as float64 with a missing value (MLflow's enforcement
    # would refuse one or the other for a "long" or "double" column)
    assert len(model.predict(raw.assign(n_int=pd.Series([3], dtype="int64")))) == 1
    assert str(model.metadata.get_input_schema().input_types_dict()["n_int"]) == "Any"


@pytest.mark.parametrize("kind", ["regression", "multiclass"])
def test_regression_and_multiclass_metrics(store, kind):
    from airloop.model.train import prepare_split, train_candidate

    task = "regression" if kind == "regression" else "classification"
    cand = {"name": "ridge", "estimator": "ridge"} if task == "regression" else LR
    cfg = make_cfg(name=f"t_{kind}", task=task, training={"n_iter": 2, "cv_folds": 3, "candidates": [cand]})
    split = prepare_split(cfg, make_frame(kind=kind), (store / kind).as_uri())
    result = train_candidate(cfg, cand["name"], split)
    if task == "regression":
        assert set(result["test_metrics"]) == {"rmse", "mae", "r2"}
        assert result["primary_metric"] == "rmse" and result["greater_is_better"] is False
        assert result["cv_score"] > 0  # reported as rmse, not sklearn's negated score
        assert result["test_metrics"]["r2"] > 0.5
    else:
        assert set(result["test_metrics"]) == {"roc_auc", "f1", "log_loss", "accuracy"}
        assert result["test_metrics"]["roc_auc"] > 0.7


def test_select_best_respects_metric_direction(store):
    from mlflow.tracking import MlflowClient

    from airloop.model.train import select_best
    from airloop.store import tracking

    tracking.configure_mlflow()
    client = MlflowClient()
    exp = tracking.ensure_experiment(make_cfg())
    ids = [client.create_run(exp).info.run_id for _ in range(3)]
    results = [
        {"run_id": ids[0], "candidate": "a", "cv_score": 2.0},
        {"run_id": ids[1], "candidate": "b", "cv_score": 1.0},
        {"run_id": ids[2], "candidate": "c", "cv_score": 3.0},
    ]
    lower = select_best(make_cfg(task="regression"), results)  # rmse: lower is better
    assert lower["candidate"] == "b"
    assert lower["ranking"] == [("b", 1.0), ("a", 2.0), ("c", 3.0)]
    assert lower["summary"] == "Selected b by cv_rmse (lower is better): b=1.0000, a=2.0000, c=3.0000"
    assert client.get_run(ids[1]).data.tags["airloop.selected"] == "true"
    assert client.get_run(ids[2]).data.tags["airloop.selected"] == "false"

    higher = select_best(make_cfg(), results)  # roc_auc: higher is better
    assert higher["candidate"] == "c" and higher["ranking"][0] == ("c", 3.0)
    assert client.get_run(ids[2]).data.tags["airloop.selected"] == "true"
    with pytest.raises(BadInput, match="no candidate produced a cv score"):
        select_best(make_cfg(), [])


def test_lineage_tags_and_run_url(store, monkeypatch):
    from mlflow.tracking import MlflowClient

    from airloop.store import tracking

    outside = tracking.lineage_tags(None)
    assert set(outside) == {"airloop.git_sha", "airloop.uv_lock_sha256"}
    mapped = tracking.lineage_tags({"dag_id": "d", "run_id": "r", "try_number": 2, "map_index": -1})
    assert mapped["airflow.try_number"] == "2" and "airflow.map_index" not in mapped
    monkeypatch.setenv("AIRLOOP_MLFLOW_UI_URL", "http://mlflow.example:5000/")
    exp = tracking.ensure_experiment(make_cfg("urls"))
    assert tracking.ensure_experiment(make_cfg("urls")) == exp  # idempotent
    run_id = MlflowClient().create_run(exp).info.run_id
    assert tracking.run_url(run_id) == f"http://mlflow.example:5000/#/experiments/{exp}/runs/{run_id}"
    assert MlflowClient().get_experiment(exp).artifact_location.endswith("/artifacts/urls")


def test_no_pickle_fallback_training_fails_naming_the_estimator(store, monkeypatch):
    """When skops cannot save the model with trusted types, training fails; it never falls back to pickle."""
    import mlflow

    from airloop.errors import BadInput
    from airloop.model.candidates import build_pipeline
    from airloop.model.train import log_sklearn_model
    from airloop.store import tracking

    monkeypatch.setattr("airloop.store.models.TRUSTED_PREFIXES", ())  # now numpy.dtype is "untrusted"
    frame = make_frame(n=60)
    model = build_pipeline(CandidateConfig(**LR), ["x1", "x2", "n_int"], ["color"], seed=0).fit(
        frame.drop(columns="y"), frame["y"]
    )
    with mlflow.start_run(experiment_id=tracking.ensure_experiment(make_cfg())) as run:
        with pytest.raises(BadInput, match=r"LogisticRegression.*numpy\.dtype"):
            log_sklearn_model(model, frame.drop(columns="y"))
    assert not mlflow.artifacts.list_artifacts(run_id=run.info.run_id)


def test_same_data_version_and_seed_give_the_same_split_and_metrics(store):
    """Reproducibility: the split is frozen per data version, and a seeded forest retrained on it scores the
    same; another seed does not (so the test can tell)."""
    from airloop.model.train import prepare_split, train_candidate

    rf = {"name": "rf", "estimator": "random_forest", "params": {"n_estimators": 15, "n_jobs": 1}}
    rf["search_space"] = {"max_depth": [3, 6, None], "min_samples_leaf": [1, 3]}
    cfg = make_cfg("repro", training={"n_iter": 2, "cv_folds": 2, "candidates": [rf]})
    frame = make_frame(n=240, seed=4)
    a = prepare_split(cfg, frame, (store / "repro_a").as_uri())
    b = prepare_split(cfg, frame.sample(frac=1.0, random_state=9), (store / "repro_b").as_uri())
    assert a["fingerprint"] == b["fingerprint"]  # the data version does not depend on row order
    first, second = train_candidate(cfg, "rf", a), train_candidate(cfg, "rf", a)
    assert first["cv_score"] == second["cv_score"] and first["test_metrics"] == second["test_metrics"]
    other = make_cfg("repro", training={"n_iter": 2, "cv_folds": 2, "seed": 7, "candidates": [rf]})
    assert train_candidate(other, "rf", a)["test_metrics"] != first["test_metrics"]
