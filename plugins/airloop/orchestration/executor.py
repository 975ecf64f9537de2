"""The LocalExecutor with Airloop's heavy libraries imported once per worker, before it forks task processes.

Each LocalExecutor worker forks one process per task (Airflow's supervisor), and that process imports what the
task needs. pandas, pyarrow, scikit-learn, MLflow and Great Expectations take seconds to import, and tens of
seconds on a loaded machine: paid per task, they dominated every task's run time. Imported here, in the worker
(forked from the scheduler, which stays lean), every task process starts with them already in memory. What is
preloaded is :mod:`airloop.orchestration.preload`, shared with the Celery workers
(:mod:`airloop.orchestration.celery_config`).

Selected with ``AIRFLOW__CORE__EXECUTOR=airloop.orchestration.executor.PreloadingLocalExecutor``
(:mod:`airloop.orchestration.stack` sets it). Being imported by the scheduler, it also brings
:mod:`airloop.orchestration.sqlite_clock` there (new DAG runs start without waiting for the next whole second)
and installs :mod:`airloop.orchestration.scheduler_pace` (the scheduler wakes when a task ends).
"""

from __future__ import annotations

import math
import multiprocessing
import time

from airflow.executors import local_executor
from airflow.executors.local_executor import LocalExecutor

from airloop.orchestration import scheduler_pace, sqlite_clock  # noqa: F401 - sqlite_clock: now() to the ms on SQLite
from airloop.orchestration.preload import preload

scheduler_pace.install()


def _preloaded_worker(**kwargs) -> None:
    preload()
    local_executor._run_worker(**kwargs)


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers import :data:`airloop.orchestration.preload.PRELOAD` before their first task.

    ``in_flight`` holds the keys sent to the workers whose end has not come back yet (Airflow 3.3's
    LocalExecutor leaves the base class's ``running`` empty), ``last_end_s`` the ``time.monotonic()`` of the
    last end: :mod:`airloop.orchestration.scheduler_pace` reads both."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_flight: set = set()
        self.last_end_s = -math.inf
        scheduler_pace.watch(self)

    def _process_workloads(self, workload_list) -> None:
        super()._process_workloads(workload_list)
        self.in_flight.update(workload.key for workload in workload_list)

    def change_state(self, key, state, info=None, remove_running=True) -> None:
        super().change_state(key, state, info, remove_running)
        if getattr(state, "value", state) != "running":  # a worker reports "running" first, then the end
            self.in_flight.discard(key)
            self.last_end_s = time.monotonic()

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
