"""Helpers of the end-to-end and browser tests: run the `airloop` command on its own AIRLOOP_HOME.

(A module of its own: test files cannot import ``conftest``, which names a different file per folder.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_env(home: Path, **env: str) -> dict[str, str]:
    """The caller's environment without its Airflow, MLflow and Airloop settings, pointed at ``home``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "AIRLOOP"))}
    environ.update({"AIRLOOP_HOME": str(home), "PYTHONPATH": str(REPO / "plugins"), **env})
    return environ


def run_airloop(args: list[str], home: Path, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    """``python -m airloop.cli ARGS`` with its own AIRLOOP_HOME (and nothing of the caller's Airflow/MLflow)."""
    return subprocess.run(
        [sys.executable, "-m", "airloop.cli", *args],
        env=clean_env(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
