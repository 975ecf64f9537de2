"""The preload of Airloop's heavy imports in executor workers: Celery's worker signal triggers it, the Celery
configuration is Airflow's own otherwise, and docker-compose.yaml names the module that does it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_the_celery_worker_signal_imports_the_heavy_modules_before_the_pool_forks():
    out = _run(
        "import sys\n"
        "from airloop.orchestration import celery_config\n"
        "from airloop.orchestration.preload import PRELOAD\n"
        "before = [m for m in PRELOAD if m in sys.modules]\n"
        "from celery.signals import import_modules\n"
        "import_modules.send(sender=None)\n"
        "after = [m for m in PRELOAD if m not in sys.modules]\n"
        "print(len(before), len(after), len(PRELOAD))\n"
    )
    before, missing_after, total = map(int, out.split()[-3:])
    assert before < total, "importing the config must not itself import everything (the scheduler imports it)"
    assert missing_after == 0, f"{missing_after} of {total} modules were not preloaded by the signal"


def test_the_celery_configuration_is_airflow_s_default_and_compose_names_it():
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    from airloop.orchestration.celery_config import CELERY_CONFIG

    assert CELERY_CONFIG == DEFAULT_CELERY_CONFIG
    compose = (REPO / "docker-compose.yaml").read_text()
    assert "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS: airloop.orchestration.celery_config.CELERY_CONFIG" in compose


def test_mlflow_stores_are_opened_once_and_no_connection_crosses_a_fork(tmp_path):
    """What the executor's worker does before it forks task processes: the stores (and a new database) exist,
    the pools are empty, and a forked task reuses the stores with a pool of its own."""
    code = (
        "import os, sys\n"
        "from airloop.orchestration.preload import open_mlflow_stores\n"
        "from mlflow.tracking import MlflowClient\n"
        "engines = open_mlflow_stores()\n"
        "store = MlflowClient()._tracking_client.store\n"
        "for e in engines: e.pool.opened_by_parent = True\n"
        "print('engines', len(engines), 'idle', sum(e.pool.checkedin() for e in engines))\n"
        "sys.stdout.flush()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    client = MlflowClient()\n"
        "    same = client._tracking_client.store is store\n"
        "    names = [e.name for e in client.search_experiments()]\n"
        "    fresh = not any(getattr(e.pool, 'opened_by_parent', False) for e in engines)\n"
        "    print('child', same, fresh, names)\n"
        "    sys.stdout.flush()\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('parent', all(e.pool.opened_by_parent for e in engines))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "AIRLOOP_HOME": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "engines 2 idle 0" in lines  # tracking and registry; every connection closed before the fork
    assert "child True True ['Default']" in lines  # the parent's store, a pool of its own, the new database
    assert "parent True" in lines
    assert (tmp_path / "mlflow" / "mlflow.db").exists()
