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
