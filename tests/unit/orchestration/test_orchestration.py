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
