"""The scheduler's pace on the embedded default: it looks again after 0.05 s while work is in flight, and after
its configured idle sleep (0.2 s, :mod:`airloop.orchestration.stack`) when there is none.

Airflow's scheduler sleeps ``scheduler_idle_sleep_time`` after every loop that queued nothing, and each
hand-over waits for its next loop: a task's end to the next task of the run, an Asset event to the run it
triggers. A shorter sleep makes hand-overs quicker but costs CPU all the time, also on a stack left idle for
days. So the short sleep holds only while this scheduler's executors run or queue a task (``in_flight`` of
:class:`~airloop.orchestration.executor.PreloadingLocalExecutor`, else the base class's ``running``), and for
:data:`LINGER_S` after the last one (the Asset-triggered run comes right after a task ends). Measured on the
benchmark's lifecycle (bench/bench_orchestration.py): the hand-overs took 0.59-0.67 s in all at a 0.05 s
sleep against 1.02-1.25 s at 0.2 s.

Installed by :mod:`airloop.orchestration.executor`, which only the scheduler (and its workers) import.
"""

from __future__ import annotations

import math
import time

from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

BUSY_SLEEP_S = 0.05
LINGER_S = 2.0
_ATTR = "_scheduler_idle_sleep_time"
_BUSY_AT = "_airloop_busy_at"


def _idle_sleep(runner) -> float:
    """The sleep after an idle loop: :data:`BUSY_SLEEP_S` while a task is running or queued (or was, within
    :data:`LINGER_S`), else the configured value."""
    configured = runner.__dict__.get(_ATTR, 1.0)
    now = time.monotonic()
    executors = runner.__dict__.get("executors", ())
    if any(getattr(ex, "in_flight", None) or ex.running or ex.queued_tasks for ex in executors):
        runner.__dict__[_BUSY_AT] = now
    if now - runner.__dict__.get(_BUSY_AT, -math.inf) < LINGER_S:
        return min(configured, BUSY_SLEEP_S)
    return configured


def _set_idle_sleep(runner, value: float) -> None:
    runner.__dict__[_ATTR] = value


def install() -> None:
    """Make ``SchedulerJobRunner._scheduler_idle_sleep_time`` follow :func:`_idle_sleep` (the value Airflow
    sets from its configuration is kept as the idle one). Safe to call twice."""
    if not isinstance(SchedulerJobRunner.__dict__.get(_ATTR), property):
        setattr(SchedulerJobRunner, _ATTR, property(_idle_sleep, _set_idle_sleep))
