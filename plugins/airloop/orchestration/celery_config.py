"""Airflow's Celery configuration, plus Airloop's preload in the worker: ``[celery] celery_config_options =
airloop.orchestration.celery_config.CELERY_CONFIG`` (docker-compose.yaml and the integration topology set it).

The settings are Airflow's own defaults, unchanged. What this adds: when a Celery worker starts, before it forks
its pool processes, it imports :data:`airloop.orchestration.preload.PRELOAD`, so every task process forked from
the pool starts with pandas, scikit-learn, MLflow and Great Expectations already imported (as Airflow's provider
does for its own modules on the same signal). The scheduler imports this module too, but the signal fires only in
a worker.
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import import_modules

from airloop.orchestration.preload import preload

CELERY_CONFIG = dict(DEFAULT_CELERY_CONFIG)


@import_modules.connect
def preload_in_worker(*args, **kwargs) -> None:
    """Celery's ``import_modules`` signal: the worker is importing its task modules, before the pool forks."""
    preload()
