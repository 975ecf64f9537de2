"""Defects 2 and 3: a failed or killed promotion leaves the champion untouched or recorded; the gate's
comparison is compare-and-set against the champion it compared with.

Faults, against the real stores: the S3 lake's server (SeaweedFS) dies before promote; kill -9 of the
promoting process after the intent record and after the alias moved; two retrains judged against one champion.
"""

from __future__ import annotations

import signal
import threading

import pytest
from fixtures.faultkit import champion, make_cfg, run_child


def _tags(cfg, version):
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_model_version(cfg.registered_model_name, str(version)).tags


def _register_all(cfg, logged_models, n, **tags):
    from airloop.store import registry

    return [registry.register(cfg, uri, run_id, tags or None) for uri, run_id in logged_models[:n]]


@pytest.mark.integration  # a private SeaweedFS, stopped mid-test
def test_a_lake_that_dies_before_promote_leaves_the_champion_untouched(logged_models, private_s3, monkeypatch):
    from airloop.store import promotions

    for key, value in private_s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRLOOP_LAKE_URI", f"s3://{private_s3.new_bucket()}/lake")
    cfg = make_cfg("s3dies")
    v1, v2 = _register_all(cfg, logged_models, 2)
    promotions.promote(cfg, v1, reason="first", actor="tester")
    from fixtures.services import stop_seaweedfs

    stop_seaweedfs(private_s3)  # the lake's server dies before promote
    with pytest.raises(Exception):  # noqa: B017 - whatever the S3 client raises; what matters is what moved
        promotions.promote(cfg, v2, reason="second", actor="tester")
    assert champion(cfg) == v1, "the alias moved although the promotion failed"
    assert "airloop.previous_champion" not in _tags(cfg, v2)


KILL_AT = """
import os, signal
from airloop.store import promotions, registry
from fixtures.faultkit import make_cfg

cfg = make_cfg({name!r})
real = promotions._write_log
real_alias = registry.MlflowClient.set_registered_model_alias


def write_log(cfg, record):
    if record.get("status") == {status!r}:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 at this exact step
    return real(cfg, record)


promotions._write_log = write_log
promotions.promote(cfg, {version!r}, reason="killed", actor="tester")
"""


@pytest.mark.parametrize(
    ("status", "expected"),
    [("completed", "moved"), ("intent", "unmoved")],
    ids=["after-the-alias-moved", "before-the-intent-record"],
)
def test_kill_9_during_promote_leaves_a_record_for_every_alias_move(logged_models, mlflow_store, status, expected):
    """kill -9 just before the completion record (the alias has moved) or just before the intent record."""
    from airloop.store import promotions

    cfg = make_cfg(f"kill_{status}")
    v1, v2 = _register_all(cfg, logged_models, 2)
    promotions.promote(cfg, v1, reason="first", actor="tester")
    child = run_child(KILL_AT.format(name=cfg.name, status=status, version=v2))
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    log = promotions.promotion_log(cfg)
    if expected == "moved":
        assert champion(cfg) == v2
        assert log[-1]["version"] == v2 and log[-1]["status"] == "intent", "the alias moved without a record"
    else:
        assert champion(cfg) == v1 and log[-1]["version"] == v1
    repaired = promotions.repair_promotions(cfg)  # what the next promotion does first
    final = promotions.promotion_log(cfg)[-1]
    if expected == "moved":
        assert [r["status"] for r in repaired] == ["completed"]
        assert final["version"] == v2 and final["status"] == "completed" and final["repaired"]
        assert _tags(cfg, v2)["airloop.previous_champion"] == v1
        # and a rollback finds the champion this repaired promotion replaced
        assert promotions.rollback(cfg, reason="undo", actor="tester")["version"] == v1
    else:
        assert repaired == [] and champion(cfg) == v1


def test_the_gate_promotes_only_over_the_champion_it_compared_with(logged_models, mlflow_store):
    """Two retrains are both judged against v1: v3 is promoted first; v2 must not replace v3 unjudged."""
    from airloop.model.promotion import promote_challenger
    from airloop.store import promotions, registry

    cfg = make_cfg("cas")
    (v1,) = _register_all(cfg, logged_models, 1)
    promote_challenger(cfg, v1)
    v2, v3 = (registry.register(cfg, uri, run, {registry.COMPARED_WITH_TAG: v1}) for uri, run in logged_models[1:3])
    promote_challenger(cfg, v3)
    with pytest.raises(promotions.ChampionMoved, match=f"compared v{v2} with champion v{v1}.*now v{v3}"):
        promote_challenger(cfg, v2)
    assert champion(cfg) == v3
    refused = promotions.promotion_log(cfg)[-1]
    assert refused["event"] == "promotion_refused" and refused["version"] == v2 and f"now v{v3}" in refused["reason"]
    # a person's rollback is not a gate comparison: it is not refused
    assert promotions.rollback(cfg, reason="undo", actor="tester")["version"] == v1


def test_racing_gate_promotions_move_the_champion_once(logged_models, mlflow_store):
    """The two promotions of the race above, concurrently: exactly one wins, the other is refused and recorded."""
    from airloop.model.promotion import promote_challenger
    from airloop.store import promotions, registry

    cfg = make_cfg("race")
    (v1,) = _register_all(cfg, logged_models, 1)
    promote_challenger(cfg, v1)
    racers = [registry.register(cfg, uri, run, {registry.COMPARED_WITH_TAG: v1}) for uri, run in logged_models[1:3]]
    outcome: dict[str, str] = {}

    def go(version):
        try:
            promote_challenger(cfg, version)
            outcome[version] = "promoted"
        except promotions.ChampionMoved:
            outcome[version] = "refused"

    threads = [threading.Thread(target=go, args=(v,)) for v in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcome.values()) == ["promoted", "refused"]
    winner = next(v for v, o in outcome.items() if o == "promoted")
    assert champion(cfg) == winner
    statuses = [(r["version"], r["status"]) for r in promotions.promotion_log(cfg)]
    assert (winner, "completed") in statuses and ({*racers} - {winner}).pop() in {
        v for v, s in statuses if s == "refused"
    }
