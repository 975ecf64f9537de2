"""The embedded default's guards: one metadata-DB migration at a time, one group of Airflow components per home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

MIGRATE = (
    "from airloop.orchestration.runner import ensure_airflow_db, prepare_environment\n"
    "prepare_environment(); ensure_airflow_db()\n"
    "from airflow.utils.db import check_migrations; check_migrations(timeout=0); print('current')\n"
)


def test_two_first_runs_on_a_fresh_home_both_succeed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "AIRLOOP"))}
    env.update(AIRLOOP_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO / "plugins"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert out.strip().endswith("current")


def test_a_second_group_of_airflow_components_on_the_same_home_is_refused(tmp_path):
    from airloop.orchestration.stack import StackError, _take_lock

    first = _take_lock(tmp_path / "airflow", 8080)
    with pytest.raises(StackError, match=r"already running on .* \(pid \d+, http://127.0.0.1:8080\)"):
        _take_lock(tmp_path / "airflow", 8081)
    first.close()
    _take_lock(tmp_path / "airflow", 8081).close()


def test_the_execution_api_runs_apart_from_the_ui_and_the_tasks_report_to_it(tmp_path, monkeypatch):
    """On SQLite, the public API's audit-log commit on the event loop and a task's state update in one process
    stalled each other for the busy timeout; the stack runs them as two api-servers."""
    from airloop.orchestration import stack

    monkeypatch.setenv("AIRLOOP_HOME", str(tmp_path))
    commands = stack.component_commands(8080, 8081)
    assert set(commands) == set(stack.COMPONENTS)
    assert commands["api-server"][1:5] == ["api-server", "--apps", "core", "--host"]
    assert commands["api-server"][-4:] == ["--port", "8080", "--workers", "1"]
    assert commands["execution-api"][1:4] == ["api-server", "--apps", "execution"]
    assert commands["execution-api"][-4:] == ["--port", "8081", "--workers", "1"]
    env = stack.stack_env(8080, 2, execution_port=8081)
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8081/execution/"
    assert env["AIRFLOW__API__PORT"] == "8080"
