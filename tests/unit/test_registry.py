"""airloop.registry: register → challenger → champion, with aliases as the truth and stages mirrored."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airloop.config import parse_pipeline
from airloop.errors import BadInput, NothingToDo


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow SQLite store and artifact root for the module (creating the schema takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(root / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.setenv("AIRLOOP_ARTIFACT_URI", (root / "artifacts").as_uri())
        yield root


def make_cfg(name):
    return parse_pipeline(
        {"name": name, "source": {"uri": "file:///nowhere/*.csv"}, "target": "y", "task": "classification"}
    )


@pytest.fixture(scope="module")
def models(store):
    """Three logged models (one run each): [(model_uri, run_id), ...]."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from airloop import tracking
    from airloop.train import log_sklearn_model

    exp = tracking.ensure_experiment(make_cfg("reg"))
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    out = []
    for i in range(3):
        y = (X["a"] + i * X["b"] > 0).astype(int)
        with mlflow.start_run(experiment_id=exp) as run:
            info, _ = log_sklearn_model(LogisticRegression().fit(X, y), X)
        out.append((info.model_uri, run.info.run_id))
    return out


def aliases(cfg):
    from mlflow.tracking import MlflowClient

    return {k: str(v) for k, v in MlflowClient().get_registered_model(cfg.registered_model_name).aliases.items()}


def stage(cfg, version):
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_model_version(cfg.registered_model_name, version).current_stage


def test_get_version_is_none_without_model_or_alias(models):
    from airloop import registry

    cfg = make_cfg("nothing_yet")
    assert registry.get_version(cfg, "champion") is None
    uri, run_id = models[0]
    registry.register(cfg, uri, run_id)
    assert registry.get_version(cfg, "champion") is None
    with pytest.raises(NothingToDo, match="no version has the alias 'champion'"):
        registry.load_model(cfg)


def test_register_creates_the_model_once_and_is_idempotent_per_run(models):
    from mlflow.tracking import MlflowClient

    from airloop import registry

    cfg = make_cfg("idem")
    uri, run_id = models[0]
    v1 = registry.register(cfg, uri, run_id, {"airloop.candidate": "lr", "n": 3})
    assert v1 == "1"
    assert registry.register(cfg, uri, run_id) == "1"  # an Airflow retry does not add a version
    assert registry.register(cfg, *models[1]) == "2"
    client = MlflowClient()
    rm = client.get_registered_model(cfg.registered_model_name)
    assert "idem" in rm.description and "classification" in rm.description
    mv = client.get_model_version(cfg.registered_model_name, "1")
    assert mv.run_id == run_id and mv.tags == {"airloop.candidate": "lr", "n": "3"}
    assert mv.source == uri
    linked = json.loads(client.get_logged_model(uri.removeprefix("models:/")).tags["mlflow.modelVersions"])
    assert {"name": cfg.registered_model_name, "version": 1} in linked


def test_challenger_then_promote_moves_champion_and_archives_the_old(models):
    from mlflow.tracking import MlflowClient

    from airloop import registry

    cfg = make_cfg("lifecycle")
    v1 = registry.register(cfg, *models[0])
    registry.set_challenger(cfg, v1)
    assert str(registry.get_version(cfg, "challenger").version) == v1
    assert stage(cfg, v1) == "Staging"

    first = registry.promote(cfg, v1, reason="first model", actor="airloop-gate")
    assert first["version"] == v1 and first["previous"] is None
    assert first["reason"] == "first model" and first["actor"] == "airloop-gate" and first["at"]
    assert aliases(cfg) == {"champion": v1}  # the challenger alias went with the promotion
    assert stage(cfg, v1) == "Production"

    v2 = registry.register(cfg, *models[1])
    registry.set_challenger(cfg, v2)
    assert aliases(cfg) == {"champion": v1, "challenger": v2}
    second = registry.promote(cfg, v2, reason="beats v1", actor="alice")
    assert second["previous"] == v1
    assert aliases(cfg) == {"champion": v2}
    assert (stage(cfg, v1), stage(cfg, v2)) == ("Archived", "Production")
    tags = MlflowClient().get_model_version(cfg.registered_model_name, v2).tags
    assert tags["airloop.promoted_by"] == "alice"
    assert tags["airloop.promotion_reason"] == "beats v1"
    assert tags["airloop.previous_champion"] == v1
    assert tags["airloop.promoted_at"] == second["at"]
    old = MlflowClient().get_model_version(cfg.registered_model_name, v1).tags
    assert old["airloop.replaced_by"] == v2 and old["airloop.previous_champion"] == "none"

    # promoting again (a retry, or a rollback to v1) keeps exactly one champion
    again = registry.promote(cfg, v2, reason="retry", actor="alice")
    assert again["previous"] is None and aliases(cfg) == {"champion": v2}
    rollback = registry.promote(cfg, v1, reason="rollback", actor="bob")
    assert rollback["previous"] == v2 and aliases(cfg) == {"champion": v1}
    assert (stage(cfg, v1), stage(cfg, v2)) == ("Production", "Archived")
    productions = [
        str(mv.version)
        for mv in MlflowClient().search_model_versions(f"name='{cfg.registered_model_name}'")
        if mv.current_stage == "Production"
    ]
    assert productions == [v1]


def test_promote_unknown_version_is_refused(models):
    from airloop import registry

    cfg = make_cfg("unknown")
    registry.register(cfg, *models[0])
    with pytest.raises(BadInput, match="no version '7' to promote"):
        registry.promote(cfg, "7", reason="typo", actor="bob")


def test_load_model_returns_the_champion_and_its_version(models):
    from airloop import registry

    cfg = make_cfg("loading")
    registry.register(cfg, *models[0])
    v2 = registry.register(cfg, *models[2])
    registry.promote(cfg, v2, reason="test", actor="test")
    model, version = registry.load_model(cfg)
    assert version == v2
    proba = model.predict_proba(pd.DataFrame({"a": [0.5], "b": [-1.0]}))
    assert proba.shape == (1, 2)
    pyfunc, _ = registry.load_model(cfg, flavor="pyfunc")
    assert len(pyfunc.predict(pd.DataFrame({"a": [0.5], "b": [-1.0]}))) == 1
