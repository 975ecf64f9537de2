"""airloop.orchestration.task_exit: once a task process has closed every pipe, Airflow's supervisor sees its exit
as soon as it happens, instead of after a `select` on no pipe that sleeps the heartbeat interval (5 s)."""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
import weakref

import psutil
from airflow.sdk.execution_time.supervisor import ActivitySubprocess, PsutilTracker

from airloop.orchestration import task_exit


def _exiting_task(code: int, after_s: float) -> ActivitySubprocess:
    """A supervisor's view of a task process whose pipes are all closed and which exits after ``after_s``."""
    proc = subprocess.Popen([sys.executable, "-c", f"import time, sys; time.sleep({after_s}); sys.exit({code})"])
    sub = object.__new__(ActivitySubprocess)
    sub._exit_code, sub._process_exit_monotonic = None, None
    sub._open_sockets = weakref.WeakKeyDictionary()
    sub._process = PsutilTracker(psutil.Process(proc.pid))
    sub.selector = selectors.DefaultSelector()
    return sub


def test_the_exit_is_seen_when_it_happens_not_after_the_heartbeat_interval():
    task_exit.install()
    task_exit.install()  # idempotent: the second call does not wrap the wrapper
    assert ActivitySubprocess._service_subprocess.airloop_waits_for_exit
    sub = _exiting_task(0, after_s=0.5)
    started = time.monotonic()
    assert sub._service_subprocess(max_wait_time=5.0) == 0
    took = time.monotonic() - started
    assert took < 2.5, f"exit seen after {took:.1f} s (Airflow's own loop: the whole 5 s)"
    assert sub._process_exit_monotonic is not None


def test_a_process_still_running_is_reported_alive_after_the_wait():
    task_exit.install()
    sub = _exiting_task(0, after_s=3)
    started = time.monotonic()
    assert sub._service_subprocess(max_wait_time=0.3) is None
    assert 0.25 <= time.monotonic() - started < 2
    assert sub._service_subprocess(max_wait_time=10) == 0
