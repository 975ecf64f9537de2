"""airloop.evaluate: the gate scores challenger and champion on the same frozen holdout and records why."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airloop import lake as lk
from airloop.config import parse_pipeline
from airloop.errors import NothingToDo

LR = {"name": "lr", "estimator": "logistic_regression", "search_space": {"C": [1.0]}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow SQLite store and artifact root for the module (creating the schema takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(root / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.setenv("AIRLOOP_ARTIFACT_URI", (root / "artifacts").as_uri())
        yield root


def make_cfg(name="gate", **evaluation):
    return parse_pipeline(
        {
            "name": name,
            "source": {"uri": "file:///nowhere/*.csv"},
            "target": "y",
            "task": "classification",
            "training": {"n_iter": 1, "cv_folds": 2, "candidates": [LR]},
            "evaluation": evaluation,
        }
    )


def make_frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "visits": rng.integers(0, 9, n),  # an int64 column: the fresh-process pyfunc must accept it
            "color": rng.choice(["red", "green", "blue"], n),
        }
    )
    frame["y"] = (frame["x1"] + (frame["color"] == "red") * 1.5 + rng.normal(scale=0.5, size=n)) > 0.5
    frame["y"] = frame["y"].astype(int)
    frame.loc[::11, "x2"] = np.nan
    frame.loc[::13, "color"] = None
    return frame


@pytest.fixture(scope="module")
def trained(store):
    """A good model and one trained on shuffled labels, sharing one frozen holdout."""
    from airloop.train import prepare_split, train_candidate

    cfg = make_cfg()
    split = prepare_split(cfg, make_frame(), (store / "split").as_uri())
    good = train_candidate(cfg, "lr", split)
    train = lk.read_parquet(split["train_uri"])
    shuffled = train.assign(y=np.random.default_rng(1).permutation(train["y"].to_numpy()))
    bad_split = {**split, "train_uri": lk.write_parquet((store / "shuffled.parquet").as_uri(), shuffled)}
    bad = train_candidate(cfg, "lr", bad_split)
    return {"good": good, "bad": bad, "split": split}


@pytest.fixture
def fast_infra(monkeypatch):
    """Skip the fresh-process load (seconds each) in gate-logic tests; it has its own tests below."""
    monkeypatch.setattr("airloop.evaluate.infra_check", lambda uri, rows, expected: (True, "not run here"))


def champion_is(cfg, result):
    from airloop import registry

    version = registry.register(cfg, result["model_uri"], result["run_id"])
    registry.promote(cfg, version, reason="test setup", actor="test")
    return version


def run_of(result):
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_run(result["run_id"])


def test_first_model_is_blessed_registered_and_challenger(trained):
    import mlflow

    from airloop import registry
    from airloop.evaluate import evaluate_challenger, require_blessed

    cfg = make_cfg("gate_first")
    verdict = evaluate_challenger(cfg, trained["good"], run_info={"dag_id": "airloop_gate_evaluate"})
    assert verdict["blessed"] is True, verdict["summary"]
    assert verdict["version"] == "1" and require_blessed(verdict) == "1"
    assert str(registry.get_version(cfg, "challenger").version) == "1"
    assert verdict["champion_version"] is None and verdict["champion_metric"] is None and verdict["ci"] is None
    assert verdict["metric"] == "roc_auc"
    assert verdict["challenger_metric"] == pytest.approx(trained["good"]["test_metrics"]["roc_auc"])
    assert any(r.startswith("PASS infra: loads in a fresh process") for r in verdict["reasons"])
    assert any(r.startswith("PASS champion: no champion yet") for r in verdict["reasons"])
    assert verdict["holdout_uri"] == trained["split"]["test_uri"]
    assert len(verdict["summary"].splitlines()) >= 4 and "BLESSED" in verdict["summary"]
    json.dumps({k: v for k, v in verdict.items()})  # XCom-safe

    tags = run_of(trained["good"]).data.tags
    assert tags["airloop.gate.verdict"] == "blessed"
    assert "PASS infra" in tags["airloop.gate.reasons"]
    assert tags["airloop.gate.dag_id"] == "airloop_gate_evaluate"
    saved = mlflow.artifacts.load_dict(f"runs:/{trained['good']['run_id']}/gate/verdict.json")
    assert saved["blessed"] is True and saved["reasons"] == verdict["reasons"]


def test_better_challenger_beats_the_champion_on_the_same_holdout(trained, fast_infra):
    from airloop import registry
    from airloop.evaluate import evaluate_challenger

    cfg = make_cfg("gate_better")
    old = champion_is(cfg, trained["bad"])
    verdict = evaluate_challenger(cfg, trained["good"])
    assert verdict["blessed"] is True, verdict["summary"]
    assert verdict["champion_version"] == old
    assert verdict["champion_metric"] == pytest.approx(trained["bad"]["test_metrics"]["roc_auc"])
    assert verdict["challenger_metric"] > verdict["champion_metric"] + 0.2
    low, high = verdict["ci"]
    assert 0 < low <= verdict["challenger_metric"] - verdict["champion_metric"] <= high
    assert any(r.startswith("PASS champion: roc_auc") and "better by" in r for r in verdict["reasons"])
    assert str(registry.get_version(cfg, "challenger").version) == verdict["version"] == "2"
    assert str(registry.get_version(cfg, "champion").version) == old  # promotion is the promote DAG's job


def test_clearly_worse_challenger_is_rejected_with_the_metric_and_both_values(trained, fast_infra):
    from mlflow.tracking import MlflowClient

    from airloop import registry
    from airloop.evaluate import evaluate_challenger, require_blessed

    cfg = make_cfg("gate_worse", tolerance=0.01)
    champion_is(cfg, trained["good"])
    verdict = evaluate_challenger(cfg, trained["bad"])
    assert verdict["blessed"] is False and verdict["version"] is None
    chall, champ = verdict["challenger_metric"], verdict["champion_metric"]
    assert chall < champ - 0.2
    failed = [r for r in verdict["reasons"] if r.startswith("FAIL")]
    assert len(failed) == 1
    assert "roc_auc" in failed[0] and f"{chall:.4f}" in failed[0] and f"{champ:.4f}" in failed[0]
    assert "tolerance 0.01" in failed[0]
    assert verdict["ci"][1] < 0
    assert "REJECTED" in verdict["summary"]
    assert run_of(trained["bad"]).data.tags["airloop.gate.verdict"] == "rejected"
    assert registry.get_version(cfg, "challenger") is None
    assert len(MlflowClient().search_model_versions(f"name='{cfg.registered_model_name}'")) == 1
    with pytest.raises(NothingToDo, match="rejected by the gate: FAIL champion"):
        require_blessed(verdict)


def test_min_value_failure_rejects_even_without_a_champion(trained, fast_infra):
    from airloop.evaluate import evaluate_challenger

    cfg = make_cfg("gate_min", min_value=0.999)
    verdict = evaluate_challenger(cfg, trained["good"])
    assert verdict["blessed"] is False
    failed = [r for r in verdict["reasons"] if r.startswith("FAIL")]
    assert failed == [f"FAIL min_value: roc_auc {verdict['challenger_metric']:.4f} < min_value 0.999"]


def test_candidate_from_run_rebuilds_the_select_best_dict(trained):
    from airloop.evaluate import candidate_from_run

    cand = candidate_from_run(make_cfg(), trained["good"]["run_id"])
    assert cand["model_uri"] == trained["good"]["model_uri"]
    assert cand["candidate"] == "lr" and cand["cv_score"] == pytest.approx(trained["good"]["cv_score"])
    assert cand["test_metrics"] == pytest.approx(trained["good"]["test_metrics"])


def test_infra_check_loads_in_a_fresh_process(trained):
    import mlflow

    from airloop.evaluate import infra_check

    rows = lk.read_parquet(trained["split"]["test_uri"])[["x1", "x2", "visits", "color"]].head(10)
    expected = list(mlflow.sklearn.load_model(trained["good"]["model_uri"]).predict(rows))
    passed, detail = infra_check(trained["good"]["model_uri"], rows, expected)
    assert passed, detail
    passed, detail = infra_check("models:/m-doesnotexist", rows, expected)
    assert not passed and "did not load or score in a fresh process" in detail


def test_infra_check_fails_on_order_dependence_or_mismatch(monkeypatch):
    from airloop.evaluate import infra_check

    outputs = {"n": 3, "predictions": [0, 1, 1], "restored": [0, 1, 0]}
    monkeypatch.setattr("airloop.evaluate.fresh_process_predictions", lambda uri, rows: outputs)
    passed, detail = infra_check("models:/m-x", pd.DataFrame(), [0, 1, 1])
    assert not passed and "change when the rows are shuffled" in detail
    outputs["restored"] = [0, 1, 1]
    passed, detail = infra_check("models:/m-x", pd.DataFrame(), [np.int64(0), np.int64(1), np.int64(0)])
    assert not passed and "differ from the in-process predictions" in detail
    assert infra_check("models:/m-x", pd.DataFrame(), [np.int64(0), np.int64(1), np.int64(1)])[0]
