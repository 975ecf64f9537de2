"""The scheduler's pace on the embedded default: it wakes when a task ends instead of at its next look, takes
quick looks while a hand-over is under way, and keeps its configured idle sleep (0.2 s,
:mod:`airloop.orchestration.stack`) otherwise.

Airflow's scheduler sleeps ``scheduler_idle_sleep_time`` after every loop that queued nothing, and each
hand-over waits for its next loops: a task's end to the next task of the run, an Asset event to the DAG run it
triggers, that run to its first task. A shorter sleep makes hand-overs quicker but costs CPU all the time. So:

- while a task is in flight, the sleep ends early when the LocalExecutor's worker reports on its result queue
  (what the scheduler reads next anyway): the end of a task is seen at once, and no CPU is spent polling;
- for :data:`LINGER_S` after a task ends, or while a task waits in the executor's queue, the sleep is
  :data:`BUSY_SLEEP_S`: the hand-over's later steps (the Asset-triggered run, its first task) each need a loop;
- otherwise the configured idle sleep, so a stack left idle for days costs what it did (7.6% of a core).

Measured on the benchmark's lifecycle (bench/bench_orchestration.py, 8 hand-overs): 0.52-0.77 s in all against
1.02-1.34 s with the plain 0.2 s sleep. The scheduler used 15-16% of a core during the lifecycle, against 12%
with the plain sleep, 23% with a 2 s linger and 29% with a 0.05 s sleep throughout.

Installed by :mod:`airloop.orchestration.executor`, which only the scheduler (and its workers) import.
"""

from __future__ import annotations

import time
import weakref

from airflow.jobs import scheduler_job_runner
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

BUSY_SLEEP_S = 0.05
LINGER_S = 0.5
_ATTR = "_scheduler_idle_sleep_time"
_watched: weakref.WeakSet = weakref.WeakSet()


def watch(executor) -> None:
    """Let the pace read ``executor``: ``in_flight`` (keys handed to workers, not ended), ``last_end_s``
    (``time.monotonic()`` of the last end), ``queued_tasks`` and ``result_queue``."""
    _watched.add(executor)


def _idle_sleep(runner) -> float:
    """The sleep after an idle loop: :data:`BUSY_SLEEP_S` while a task is queued or within :data:`LINGER_S`
    of a task's end, else the configured value."""
    configured = runner.__dict__.get(_ATTR, 1.0)
    now = time.monotonic()
    for ex in runner.__dict__.get("executors", ()):
        if ex.queued_tasks or now - getattr(ex, "last_end_s", -LINGER_S) < LINGER_S:
            return min(configured, BUSY_SLEEP_S)
    return configured


def _set_idle_sleep(runner, value: float) -> None:
    runner.__dict__[_ATTR] = value


class _PacedTime:
    """The ``time`` module as the scheduler's loop sees it: ``sleep`` returns early when a watched executor's
    worker reports (a task started or ended); everything else is the real module."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        for ex in list(_watched):
            if ex.in_flight:
                try:
                    ex.result_queue._reader.poll(max(seconds, 0.0))  # readable: a result waits for the next loop
                    return
                except (OSError, ValueError):  # the queue was closed (the executor ended): a plain sleep
                    break
        time.sleep(seconds)


def install() -> None:
    """Make the scheduler's idle sleep follow :func:`_idle_sleep` (Airflow's configured value is kept as the
    idle one) and end early on a worker's report. Safe to call twice."""
    if not isinstance(SchedulerJobRunner.__dict__.get(_ATTR), property):
        setattr(SchedulerJobRunner, _ATTR, property(_idle_sleep, _set_idle_sleep))
    scheduler_job_runner.time = _PacedTime()
