"""Defects 7 and 9: a dead MLflow gives a clear error naming the tracking URI within ~60 s, after the
validation verdict is in the manifest; a replay with --reingest keeps the quarantine verdict on record."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from airloop.store import lake as lk
from airloop.store.lake import Lake

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
DAY = "2026-01-05"


@pytest.fixture
def shop(tmp_path, monkeypatch, pipeline_cfg, airloop_home):
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "shop.json").write_bytes((DATA / "suite.json").read_bytes())
    monkeypatch.setenv("AIRLOOP_SUITES_DIR", str(suites))
    landing = tmp_path / "landing"
    landing.mkdir()
    cfg = pipeline_cfg(f"{landing.as_uri()}/shop_*", name="shop")
    return cfg, landing, Lake("shop", root=(tmp_path / "lake").as_uri())


@pytest.fixture(params=["refused", "silent"])
def dead_tracking(request, monkeypatch):
    """A tracking URI nobody answers: a closed port (connection refused), or a socket that accepts and never
    replies (the hang that took 15 minutes)."""
    from airloop.store import tracking

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if request.param == "refused":
        sock.close()
    else:
        sock.listen(64)
    for key in tracking.HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(tracking, "_reachable", set())
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    sock.close()


@pytest.mark.timeout(150)
def test_a_dead_tracking_server_fails_within_a_minute_naming_it_after_the_verdict_is_recorded(shop, dead_tracking):
    from airloop.data.ingest import ingest_batch
    from airloop.data.validate import validate_batch
    from airloop.store.tracking import TrackingUnavailable

    cfg, landing, lake = shop
    (landing / f"shop_{DAY}.csv").write_bytes((DATA / "good.csv").read_bytes())
    ingest_batch(cfg, DAY, lake=lake)
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=rf"MLflow tracking server {dead_tracking}.*not reachable"):
        validate_batch(cfg, DAY, lake=lake)
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"the first clear message took {elapsed:.0f} s"
    manifest = lk.read_json(lake.manifest(DAY))
    assert manifest["validation"]["verdict"] in ("passed", "passed_with_warnings"), "no verdict in the manifest"
    assert lk.exists(lake.part("validated", DAY))


def test_replay_with_reingest_keeps_the_quarantine_verdict_in_the_history(shop):
    """As `airloop replay --reingest` does: quarantined, the source fixed, ingested again, validated again."""
    from airloop.data.ingest import ingest_batch
    from airloop.data.validate import BatchQuarantined, validate_batch

    cfg, landing, lake = shop
    source = landing / f"shop_{DAY}.csv"
    source.write_bytes((DATA / "out_of_range.csv").read_bytes())
    ingest_batch(cfg, DAY, lake=lake)
    with pytest.raises(BatchQuarantined):
        validate_batch(cfg, DAY, lake=lake, track=False)
    source.write_bytes((DATA / "good.csv").read_bytes())  # fixed upstream
    ingest_batch(cfg, DAY, lake=lake)  # --reingest
    validate_batch(cfg, DAY, lake=lake, replay=True, track=False)
    manifest = lk.read_json(lake.manifest(DAY))
    assert manifest["validation"]["verdict"].startswith("passed") and manifest["validation"]["replay"]
    history = manifest.get("validation_history", [])
    assert [v["verdict"] for v in history] == ["quarantined"], "the quarantine verdict was erased"
    assert history[0]["critical"], "the reasons of the quarantine were lost"
    # both versions of the raw bytes are kept, and the earlier ingest is on record
    assert len(manifest["ingest_history"]) == 1
    assert any(".superseded-" in u for u in lk.list_uris(lake.partition("raw", DAY)))
