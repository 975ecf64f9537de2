"""airloop.store.registry: register → challenger → champion, with aliases as the truth and stages mirrored."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fixtures.configs import pipeline_cfg

from airloop.errors import BadInput, NothingToDo


@pytest.fixture(scope="module")
def store(mlflow_store):
    """The module's MLflow store (tests/conftest.py: mlflow_store)."""
    return mlflow_store


def make_cfg(name):
    return pipeline_cfg(name=name, target="y", id_column=None, event_time_column=None)


@pytest.fixture(scope="module")
def models(store):
    """Three logged models (one run each): [(model_uri, run_id), ...]."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from airloop.model.train import log_sklearn_model
    from airloop.store import tracking

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
    from airloop.store import registry

    cfg = make_cfg("nothing_yet")
    assert registry.get_version(cfg, "champion") is None
    uri, run_id = models[0]
    registry.register(cfg, uri, run_id)
    assert registry.get_version(cfg, "champion") is None
    with pytest.raises(NothingToDo, match="no version has the alias 'champion'"):
        registry.load_model(cfg)


def test_register_creates_the_model_once_and_is_idempotent_per_run(models):
    from mlflow.tracking import MlflowClient

    from airloop.store import registry

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
    blessing = {k: mv.tags.pop(k) for k in ("airloop.blessing", "airloop.artifact_sha256")}  # the gate signs
    assert blessing["airloop.blessing"].startswith("hmac-sha256-v1:")
    assert mv.run_id == run_id and mv.tags == {"airloop.candidate": "lr", "n": "3"}
    assert mv.source == uri
    linked = json.loads(client.get_logged_model(uri.removeprefix("models:/")).tags["mlflow.modelVersions"])
    assert {"name": cfg.registered_model_name, "version": 1} in linked


def test_challenger_then_promote_moves_champion_and_archives_the_old(models):
    from mlflow.tracking import MlflowClient

    from airloop.store import promotions, registry

    cfg = make_cfg("lifecycle")
    v1 = registry.register(cfg, *models[0])
    promotions.set_challenger(cfg, v1)
    assert str(registry.get_version(cfg, "challenger").version) == v1
    assert stage(cfg, v1) == "Staging"

    first = promotions.promote(cfg, v1, reason="first model", actor="airloop-gate")
    assert first["version"] == v1 and first["previous"] is None
    assert first["reason"] == "first model" and first["actor"] == "airloop-gate" and first["at"]
    assert aliases(cfg) == {"champion": v1}  # the challenger alias went with the promotion
    assert stage(cfg, v1) == "Production"

    v2 = registry.register(cfg, *models[1])
    promotions.set_challenger(cfg, v2)
    assert aliases(cfg) == {"champion": v1, "challenger": v2}
    second = promotions.promote(cfg, v2, reason="beats v1", actor="alice")
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
    again = promotions.promote(cfg, v2, reason="retry", actor="alice")
    assert again["previous"] is None and aliases(cfg) == {"champion": v2}
    rollback = promotions.promote(cfg, v1, reason="rollback", actor="bob")
    assert rollback["previous"] == v2 and aliases(cfg) == {"champion": v1}
    assert (stage(cfg, v1), stage(cfg, v2)) == ("Production", "Archived")
    productions = [
        str(mv.version)
        for mv in MlflowClient().search_model_versions(f"name='{cfg.registered_model_name}'")
        if mv.current_stage == "Production"
    ]
    assert productions == [v1]


def test_promote_unknown_version_is_refused(models):
    from airloop.store import promotions, registry

    cfg = make_cfg("unknown")
    registry.register(cfg, *models[0])
    with pytest.raises(BadInput, match="no version '7' to promote"):
        promotions.promote(cfg, "7", reason="typo", actor="bob")


def test_load_model_returns_the_champion_and_its_version(models):
    from airloop.store import promotions, registry

    cfg = make_cfg("loading")
    registry.register(cfg, *models[0])
    v2 = registry.register(cfg, *models[2])
    promotions.promote(cfg, v2, reason="test", actor="test")
    model, version = registry.load_model(cfg)
    assert version == v2
    proba = model.predict_proba(pd.DataFrame({"a": [0.5], "b": [-1.0]}))
    assert proba.shape == (1, 2)
    pyfunc, _ = registry.load_model(cfg, flavor="pyfunc")
    assert len(pyfunc.predict(pd.DataFrame({"a": [0.5], "b": [-1.0]}))) == 1


# ------------------------------------------------------------------------------ promotion log, rollback


def test_promotions_are_logged_and_rollback_restores_the_previous_champion(models):
    from airloop.store import promotions, registry

    cfg = make_cfg("rollback")
    v1, v2, v3 = (registry.register(cfg, *m) for m in models)
    promotions.promote(cfg, v1, reason="first", actor="gate")
    promotions.promote(cfg, v2, reason="beats v1", actor="gate")
    promotions.promote(cfg, v3, reason="beats v2", actor="gate")
    back = promotions.rollback(cfg, reason="v3 misbehaves in production", actor="bob")
    assert back["event"] == "rollback" and back["version"] == v2 and back["previous"] == v3
    assert aliases(cfg) == {"champion": v2} and stage(cfg, v2) == "Production" and stage(cfg, v3) == "Archived"
    # rolling back again goes further back (to the champion v2 replaced), not back to v3
    again = promotions.rollback(cfg, reason="v2 too", actor="bob")
    assert again["version"] == v1 and aliases(cfg) == {"champion": v1}
    explicit = promotions.rollback(cfg, v3, reason="false alarm", actor="carol")
    assert explicit["version"] == v3 and explicit["previous"] == v1

    log = promotions.promotion_log(cfg)
    assert [(r["event"], r["version"], r["previous"]) for r in log] == [
        ("promotion", v1, None),
        ("promotion", v2, v1),
        ("promotion", v3, v2),
        ("rollback", v2, v3),
        ("rollback", v1, v2),
        ("rollback", v3, v1),
    ]
    assert log[3]["reason"] == "v3 misbehaves in production" and log[3]["actor"] == "bob" and log[3]["at"]
    assert all(r["model"] == cfg.registered_model_name and r["run_id"] for r in log)

    with pytest.raises(BadInput, match="a reason is required"):
        promotions.rollback(cfg, reason=" ", actor="bob")
    with pytest.raises(BadInput, match=f"v{v3} is already the champion"):
        promotions.rollback(cfg, v3, reason="noop", actor="bob")
    with pytest.raises(BadInput, match="no version '9' to promote"):
        promotions.rollback(cfg, "9", reason="typo", actor="bob")


def test_rollback_without_a_recorded_previous_champion_asks_for_a_version(models):
    from airloop.store import promotions, registry

    cfg = make_cfg("rollback_first")
    with pytest.raises(NothingToDo, match="no champion to roll back from"):
        promotions.rollback(cfg, reason="x", actor="bob")
    v1 = registry.register(cfg, *models[0])
    promotions.promote(cfg, v1, reason="first", actor="gate")
    with pytest.raises(BadInput, match="no previous champion before v1.*--to VERSION"):
        promotions.rollback(cfg, reason="x", actor="bob")


def test_cli_rollback_records_the_reason(models, capsys):
    from airloop import cli
    from airloop.store import promotions, registry

    cfg = make_cfg("cli_rb")
    v1, v2 = (registry.register(cfg, *m) for m in models[:2])
    promotions.promote(cfg, v1, reason="first", actor="gate")
    promotions.promote(cfg, v2, reason="second", actor="gate")
    folder = promotions.settings.airloop_home() / "pipelines_cli_rb"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cli_rb.yaml").write_text(
        'name: cli_rb\nsource: {uri: "file:///nowhere/*.csv"}\ntarget: y\ntask: classification\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_PIPELINES_DIR", str(folder))
        assert cli.main(["rollback", "cli_rb", "--reason", "latency regression"]) == 0
        assert f"v{v1} is champion again (was v{v2})" in capsys.readouterr().out
        assert cli.main(["rollback", "cli_rb", "--to", "7", "--reason", "typo"]) == 2
        assert "no version '7'" in capsys.readouterr().err
        assert cli.main(["promotions", "cli_rb"]) == 0
        assert "rollback  v1 (previous v2)" in capsys.readouterr().out
    last = promotions.promotion_log(cfg)[-1]
    assert (
        last["event"] == "rollback" and last["reason"] == "latency regression" and "airloop rollback" in last["actor"]
    )
    assert aliases(cfg) == {"champion": v1}


def test_a_champion_set_by_hand_is_honoured_by_scoring_and_the_next_promotion(models, tmp_path):
    from mlflow.tracking import MlflowClient

    from airloop.serving.score import score_batch
    from airloop.store import lake as lk
    from airloop.store import promotions, registry
    from airloop.store.lake import Lake

    cfg = make_cfg("by_hand")
    v1, v2, v3 = (registry.register(cfg, *m) for m in models)
    promotions.promote(cfg, v1, reason="first", actor="gate")
    # what the MLflow UI does when someone moves the alias: no airloop code involved
    MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion", v2)
    assert str(registry.get_version(cfg, "champion").version) == v2
    assert registry.load_model(cfg)[1] == v2

    lake = Lake(cfg.name, root=(tmp_path / "lake").as_uri())
    batch = pd.DataFrame({"a": [0.1, -2.0, 1.5], "b": [1.0, 0.0, -1.0]})  # the models here are bare estimators
    lk.write_parquet(lake.part("validated", "2026-01-02"), batch)
    scored = score_batch(cfg, "2026-01-02", lake=lake)
    assert scored["model_version"] == v2
    assert set(lk.read_parquet(scored["uri"])["model_version"]) == {v2}

    assert promotions.reconcile_stages(cfg) == {v2: "Production", v1: "Archived"}
    record = promotions.promote(cfg, v3, reason="next", actor="gate")
    assert record["previous"] == v2  # the hand-made champion is the one replaced
    with pytest.raises(BadInput, match="set by hand"):
        MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion", v2)
        promotions.rollback(cfg, reason="undo", actor="bob")


# ---------------------------------------------------------------------------------------------- the race

RACER = """
import json, sys, time
from pathlib import Path
from airloop.store import promotions, registry
from airloop.config import parse_pipeline

cfg = parse_pipeline({"name": sys.argv[1], "source": {"uri": "file:///x/*.csv"}, "target": "y",
                      "task": "classification"})
versions, folder = sys.argv[2].split(","), Path(sys.argv[3])
registry.get_version(cfg, "champion")  # imports and connections paid before the start line
(folder / f"ready-{sys.argv[4]}").touch()
deadline = time.monotonic() + 120
while not (folder / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.01)
done = [promotions.promote(cfg, v, reason="race", actor=f"racer-{sys.argv[4]}")["version"] for v in versions]
print(json.dumps(done))
"""


def test_racing_promotions_leave_exactly_one_champion_and_a_consistent_log(models, tmp_path):
    import os
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from airloop.store import promotions, registry

    cfg = make_cfg("race")
    versions = [registry.register(cfg, *m) for m in models]
    promotions.promote(cfg, versions[0], reason="start", actor="setup")
    plans = [",".join(versions[i % 3 :] + versions[: i % 3]) for i in range(4)]  # 4 racers x 3 promotions
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, cfg.name, plan, str(tmp_path), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, plan in enumerate(plans)
    ]
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs if p.poll()]
        time.sleep(0.1)
    (tmp_path / "go").touch()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]

    champion = aliases(cfg)["champion"]
    productions = [
        str(mv.version)
        for mv in MlflowClient().search_model_versions(f"name='{cfg.registered_model_name}'")
        if mv.current_stage == "Production"
    ]
    assert productions == [champion], "stages disagree with the alias"
    log = promotions.promotion_log(cfg)
    assert len(log) == 1 + 4 * 3
    assert log[-1]["version"] == champion
    for before, after in zip(log, log[1:], strict=False):
        expected = None if after["version"] == before["version"] else before["version"]
        assert after["previous"] == expected, f"interleaved promotions: {before} then {after}"


def test_a_promotion_waits_for_the_lock_held_by_another_process(models, tmp_path):
    """Mutual exclusion across processes: while one promotion holds the lock, another cannot move the alias."""
    import os
    import subprocess
    import sys
    import time

    from airloop.store import promotions, registry

    cfg = make_cfg("lock")
    v1, v2 = (registry.register(cfg, *m) for m in models[:2])
    promotions.promote(cfg, v1, reason="start", actor="setup")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", RACER, cfg.name, v2, str(tmp_path), "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (tmp_path / "ready-0").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    with promotions.promotion_lock(cfg) as kind:
        assert kind == "sqlite-file"
        (tmp_path / "go").touch()
        time.sleep(3.0)  # an unlocked promotion takes well under a second
        assert proc.poll() is None, "the other process promoted while the lock was held"
        assert aliases(cfg) == {"champion": v1}
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert aliases(cfg) == {"champion": v2}
    assert promotions.promotion_log(cfg)[-1]["previous"] == v1
