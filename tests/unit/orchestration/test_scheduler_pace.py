"""airloop.orchestration.scheduler_pace: Airflow's own SchedulerJobRunner sleeps briefly after an idle loop while
its executor has a task in flight (and for a moment after), and its configured idle sleep otherwise."""

from __future__ import annotations

from types import SimpleNamespace

from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

from airloop.orchestration import scheduler_pace


def _runner(executor):
    runner = SchedulerJobRunner.__new__(SchedulerJobRunner)
    runner._scheduler_idle_sleep_time = 0.2  # what Airflow's __init__ sets from [scheduler] scheduler_idle_sleep_time
    runner.executors = [executor]
    return runner


def test_the_sleep_is_short_while_a_task_is_in_flight_and_the_configured_one_when_idle(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(scheduler_pace.time, "monotonic", lambda: clock[0])
    scheduler_pace.install()
    scheduler_pace.install()  # twice is harmless
    executor = SimpleNamespace(running=set(), queued_tasks={})
    runner = _runner(executor)
    assert runner._scheduler_idle_sleep_time == 0.2  # nothing ever ran
    executor.queued_tasks["ti"] = object()
    assert runner._scheduler_idle_sleep_time == scheduler_pace.BUSY_SLEEP_S
    executor.queued_tasks.clear()
    executor.running.add("ti")
    assert runner._scheduler_idle_sleep_time == scheduler_pace.BUSY_SLEEP_S
    executor.running.clear()
    executor.in_flight = {"ti"}  # the embedded executor's own record
    clock[0] += scheduler_pace.LINGER_S * 3
    assert runner._scheduler_idle_sleep_time == scheduler_pace.BUSY_SLEEP_S
    executor.in_flight.clear()  # the task ended: its hand-over comes within the linger
    clock[0] += scheduler_pace.LINGER_S / 2
    assert runner._scheduler_idle_sleep_time == scheduler_pace.BUSY_SLEEP_S
    clock[0] += scheduler_pace.LINGER_S
    assert runner._scheduler_idle_sleep_time == 0.2


def test_a_configured_sleep_shorter_than_the_busy_one_is_kept():
    scheduler_pace.install()
    runner = _runner(SimpleNamespace(running={"ti"}, queued_tasks={}))
    runner._scheduler_idle_sleep_time = 0.01
    assert runner._scheduler_idle_sleep_time == 0.01


def test_the_embedded_executor_installs_it_in_a_fresh_process():
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from airflow.jobs.scheduler_job_runner import SchedulerJobRunner as S\n"
        "before = isinstance(S.__dict__.get('_scheduler_idle_sleep_time'), property)\n"
        "from airloop.orchestration import executor\n"
        "print(before, isinstance(S.__dict__.get('_scheduler_idle_sleep_time'), property))\n"
    )
    plugins = str(Path(__file__).resolve().parents[3] / "plugins")
    env = {**os.environ, "PYTHONPATH": plugins}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", "True"]


def test_the_embedded_executor_knows_which_tasks_are_in_flight():
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.utils.state import TaskInstanceState

    from airloop.orchestration.executor import PreloadingLocalExecutor

    executor = PreloadingLocalExecutor(parallelism=1)
    key = TaskInstanceKey("airloop_x_train", "prepare", "manual__1", 1, -1)
    executor.in_flight.add(key)  # what _process_workloads records when it hands the task to a worker
    executor.change_state(key, TaskInstanceState.RUNNING)  # the worker's first report
    assert key in executor.in_flight
    executor.change_state(key, TaskInstanceState.SUCCESS)
    assert key not in executor.in_flight
