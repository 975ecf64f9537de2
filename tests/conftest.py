"""Shared fixtures. Every test gets its own AIRLOOP_HOME, so no test touches the developer's .airloop/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "plugins", REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


@pytest.fixture
def airloop_home(tmp_path, monkeypatch) -> Path:
    """A private AIRLOOP_HOME with its own lake and MLflow store."""
    home = tmp_path / "airloop_home"
    home.mkdir()
    monkeypatch.setenv("AIRLOOP_HOME", str(home))
    for var in ("AIRLOOP_LAKE_URI", "MLFLOW_TRACKING_URI", "AIRLOOP_ARTIFACT_URI"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def pipeline_cfg():
    """A small pipeline config factory: ``pipeline_cfg(source_uri, **overrides)``."""
    from fixtures.configs import pipeline_cfg

    return pipeline_cfg


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One real SeaweedFS S3 server for the session (see tests/fixtures/services.py)."""
    from fixtures.services import start_seaweedfs, stop_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop_seaweedfs(server)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point boto3 and pyarrow at the SeaweedFS server with admin credentials; returns the server."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database on the machine's server, dropped afterwards."""
    from fixtures.services import create_database, drop_database

    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One MLflow SQLite store, artifact root and AIRLOOP_HOME per test module (creating the schema takes
    seconds). Tests that need their own lake use a tmp_path Lake."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRLOOP_HOME", str(root / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.setenv("AIRLOOP_ARTIFACT_URI", (root / "artifacts").as_uri())
        mp.delenv("AIRLOOP_LAKE_URI", raising=False)
        yield root
