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


# --- the demo's state, shared by the end-to-end and browser tests (one `airloop demo` per session) -----------

DEMO_ARGS = ["--days", "7", "--drift-day", "4", "--daily-rows", "700", "--history-rows", "2500"]


@pytest.fixture(scope="session")
def demo_state(tmp_path_factory):
    """``airloop demo`` (what ``make demo`` runs: Airflow's own scheduler) on a small spec: (home, stdout,
    status JSON). Airflow is stopped when it returns; the state stays (``demo_ui`` starts it again)."""
    import json

    from fixtures.loopkit import run_airloop

    home = tmp_path_factory.mktemp("demo")
    proc = run_airloop(["demo", *DEMO_ARGS], home, timeout=3600)
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    status = run_airloop(["status", "--json"], home)
    assert status.returncode == 0, status.stderr[-3000:]
    return home, proc.stdout, json.loads(status.stdout)


class RunningUI:
    """An ``airloop ui`` process (what ``make ui`` runs): its URL, the admin password, the process."""

    def __init__(self, proc, url: str, password: str, home: Path):
        self.proc, self.url, self.password, self.home = proc, url, password, home

    def client(self):
        from airloop.orchestration.rest import AirflowClient

        return AirflowClient(self.url, "admin", self.password)


@pytest.fixture(scope="session")
def demo_ui(demo_state):
    """``airloop ui`` on the demo's state, on a free port. The last test of tests/e2e/test_scheduler.py stops
    it with SIGTERM (and checks that every child is gone); teardown stops it otherwise."""
    import os
    import re
    import signal
    import subprocess
    import time

    from fixtures.loopkit import clean_env
    from fixtures.services import free_port

    home = demo_state[0]
    environ = clean_env(home, PYTHONUNBUFFERED="1")
    log = home / "ui-test.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airloop.cli", "ui", "--port", str(free_port())],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    deadline = time.monotonic() + 600
    found = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"Airflow UI: (\S+)\s+\(login: admin / (\S+)\)", log.read_text())
        if found:
            break
        time.sleep(1)
    assert found, f"airloop ui did not come up:\n{log.read_text()[-4000:]}"
    ui = RunningUI(proc, found.group(1), found.group(2), home)
    yield ui
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
