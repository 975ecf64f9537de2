"""The LocalExecutor with Airloop's heavy libraries imported once per worker, before it forks task processes.

Each LocalExecutor worker forks one process per task (Airflow's supervisor), and that process imports what the
task needs. pandas, pyarrow, scikit-learn, MLflow and Great Expectations take seconds to import, and tens of
seconds on a loaded machine: paid per task, they dominated every task's run time. Imported here, in the worker
(forked from the scheduler, which stays lean), every task process starts with them already in memory.

Selected with ``AIRFLOW__CORE__EXECUTOR=airloop.orchestration.executor.PreloadingLocalExecutor``
(:mod:`airloop.orchestration.stack` sets it).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing

from airflow.executors import local_executor
from airflow.executors.local_executor import LocalExecutor

PRELOAD = (
    "pandas",
    "pyarrow.parquet",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.model_selection",
    "mlflow",
    "mlflow.sklearn",
    "great_expectations",
    "airloop.store.lake",
    "airloop.store.registry",
    "airloop.data.ingest",
    "airloop.data.validate",
    "airloop.serving.score",
    "airloop.monitoring.monitor",
    "airloop.model.plan",
    "airloop.model.train",
    "airloop.model.evaluate",
)


def preload() -> None:
    """Import the heavy modules; one that fails to import is logged and left to the task to report."""
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - the task that needs it will fail with the real error
            logging.getLogger("airloop").warning("preload of %s failed: %s", name, err)


def _preloaded_worker(**kwargs) -> None:
    preload()
    local_executor._run_worker(**kwargs)


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers import :data:`PRELOAD` before taking their first task."""

    def _spawn_worker(self):
        p = multiprocessing.Process(
            target=_preloaded_worker,
            kwargs={
                "logger_name": self.log.name,
                "input": self.activity_queue,
                "output": self.result_queue,
                "unread_messages": self._unread_messages,
                "team_conf": self.conf,
            },
        )
        p.start()
        self.workers[p.pid] = p
