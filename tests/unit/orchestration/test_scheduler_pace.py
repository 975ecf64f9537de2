"""airloop.orchestration.scheduler_pace: Airflow's own SchedulerJobRunner takes quick looks for a moment after a
task ends (or while one is queued), its configured idle sleep otherwise, and its sleep ends as soon as the
LocalExecutor's worker reports while a task is in flight."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from types import SimpleNamespace

from airflow.jobs import scheduler_job_runner
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

from airloop.orchestration import scheduler_pace


def _runner(executor):
    runner = SchedulerJobRunner.__new__(SchedulerJobRunner)
    runner._scheduler_idle_sleep_time = 0.2  # what Airflow's __init__ sets from [scheduler] scheduler_idle_sleep_time
    runner.executors = [executor]
    return runner


def test_quick_looks_while_a_task_is_queued_and_just_after_one_ends_the_configured_sleep_otherwise(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(scheduler_pace.time, "monotonic", lambda: clock[0])
    scheduler_pace.install()
    scheduler_pace.install()  # twice is harmless
    executor = SimpleNamespace(queued_tasks={}, last_end_s=-math.inf)
    runner = _runner(executor)
    assert runner._scheduler_idle_sleep_time == 0.2  # nothing ever ran
    executor.queued_tasks["ti"] = object()
    assert runner._scheduler_idle_sleep_time == scheduler_pace.BUSY_SLEEP_S
    executor.queued_tasks.clear()
    assert runner._scheduler_idle_sleep_time == 0.2  # handed to a worker: the sleep waits on its report instead
    executor.last_end_s = clock[0]  # a task ended: its hand-over comes within the linger
    clock[0] += scheduler_pace.LINGER_S / 2
    assert runner._scheduler_idle_sleep_time == scheduler_pace.BUSY_SLEEP_S
    clock[0] += scheduler_pace.LINGER_S
    assert runner._scheduler_idle_sleep_time == 0.2


def test_a_configured_sleep_shorter_than_the_busy_one_is_kept():
    scheduler_pace.install()
    runner = _runner(SimpleNamespace(queued_tasks={"ti": object()}, last_end_s=-math.inf))
    runner._scheduler_idle_sleep_time = 0.01
    assert runner._scheduler_idle_sleep_time == 0.01


class _Executor(SimpleNamespace):
    """What the pace reads of an executor (a SimpleNamespace itself cannot be held in a WeakSet)."""

    __hash__ = object.__hash__


def test_the_scheduler_s_sleep_ends_when_a_worker_reports_and_not_before():
    scheduler_pace.install()
    results = multiprocessing.SimpleQueue()
    executor = _Executor(in_flight={"ti"}, result_queue=results, queued_tasks={}, last_end_s=-math.inf)
    scheduler_pace.watch(executor)
    try:
        t0 = time.monotonic()
        scheduler_job_runner.time.sleep(0.3)  # nothing reported: the whole sleep
        assert time.monotonic() - t0 >= 0.29
        threading.Timer(0.1, results.put, [("ti", "success", None)]).start()
        t0 = time.monotonic()
        scheduler_job_runner.time.sleep(5.0)  # the report ends it
        assert time.monotonic() - t0 < 2.0
        assert results.get() == ("ti", "success", None)  # left for the executor to read
        executor.in_flight.clear()
        t0 = time.monotonic()
        scheduler_job_runner.time.sleep(0.2)  # nothing in flight: a plain sleep
        assert time.monotonic() - t0 >= 0.19
        assert scheduler_job_runner.time.monotonic is time.monotonic  # the rest is the real module
        executor.in_flight.add("lost")  # a task whose end never came back, and the executor has ended
        results.close()
        t0 = time.monotonic()
        scheduler_job_runner.time.sleep(0.2)  # a plain sleep, no error
        assert time.monotonic() - t0 >= 0.19
    finally:
        scheduler_pace._watched.discard(executor)


def test_the_embedded_executor_knows_which_tasks_are_in_flight_and_when_one_ended():
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.utils.state import TaskInstanceState

    from airloop.orchestration.executor import PreloadingLocalExecutor

    executor = PreloadingLocalExecutor(parallelism=1)
    assert executor in scheduler_pace._watched
    key = TaskInstanceKey("airloop_x_train", "prepare", "manual__1", 1, -1)
    executor.in_flight.add(key)  # what _process_workloads records when it hands the task to a worker
    executor.change_state(key, TaskInstanceState.RUNNING)  # the worker's first report
    assert key in executor.in_flight and executor.last_end_s == -math.inf
    executor.change_state(key, TaskInstanceState.SUCCESS)
    assert key not in executor.in_flight
    assert time.monotonic() - executor.last_end_s < 5


def test_the_embedded_executor_installs_it_in_a_fresh_process():
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from airflow.jobs import scheduler_job_runner as m\n"
        "before = isinstance(m.SchedulerJobRunner.__dict__.get('_scheduler_idle_sleep_time'), property)\n"
        "from airloop.orchestration import executor\n"
        "after = isinstance(m.SchedulerJobRunner.__dict__.get('_scheduler_idle_sleep_time'), property)\n"
        "print(before, after, type(m.time).__name__)\n"
    )
    plugins = str(Path(__file__).resolve().parents[3] / "plugins")
    env = {**os.environ, "PYTHONPATH": plugins}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["False", "True", "_PacedTime"]
