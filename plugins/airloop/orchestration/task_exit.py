"""A finished task's end is seen when its process exits, not up to 5 s later: a fix to Airflow's task supervisor
(``airflow.sdk.execution_time.supervisor``), installed in the executors' workers by
:func:`airloop.orchestration.preload.preload`.

The supervisor watches its task process through the process's pipes (stdout, stderr, logs, requests) with
``select``, and checks whether the process has exited after each ``select``. A task process closes its log and
request pipes, then exits, and the kernel closes stdout and stderr while the process is exiting. When that last
end of pipe is read before the process can be reaped, the supervisor's next ``select`` has no pipe left to watch
and sleeps the whole heartbeat interval (``[workers] min_heartbeat_interval``, 5 s) before it looks again.
Measured on the benchmark's lifecycle, 2 cores: in about half the runs one task reported its end 5.0-5.3 s after
its work and log were done; the same in the demo when two tasks ran at once. (The setting is whole seconds, and
a shorter heartbeat would only shorten the sleep, at a heartbeat write per second per running task.)

With every pipe closed, the process is exiting: :func:`install` makes the supervisor wait on the process itself
then, which returns the moment it is reaped. Nothing else in the supervisor changes.
"""

from __future__ import annotations

import contextlib


def install() -> None:
    """Patch ``ActivitySubprocess._service_subprocess`` (once per process; a no-op where Airflow's Task SDK
    is not installed)."""
    try:
        from airflow.sdk.execution_time.supervisor import ActivitySubprocess
    except ImportError:
        return
    original = ActivitySubprocess._service_subprocess
    if getattr(original, "airloop_waits_for_exit", False):
        return

    def _service_subprocess(self, max_wait_time: float, raise_on_timeout: bool = False, expect_signal=None):
        if self._exit_code is None and not self._open_sockets and getattr(self, "_process", None) is not None:
            # No pipe left to select on: wait for the exit itself (select would sleep the whole timeout).
            with contextlib.suppress(self._process.TimeoutExpired):
                self._process.wait(timeout=max(0.01, max_wait_time))
            return self._check_subprocess_exit(raise_on_timeout=raise_on_timeout, expect_signal=expect_signal)
        return original(self, max_wait_time, raise_on_timeout=raise_on_timeout, expect_signal=expect_signal)

    _service_subprocess.airloop_waits_for_exit = True
    ActivitySubprocess._service_subprocess = _service_subprocess
