"""Airflow's own components on the embedded default, as one supervised group: what ``make ui`` and ``airloop ui``
start. Scheduler, dag-processor, api-server and triggerer, with the LocalExecutor sized to the machine's cores,
every port on 127.0.0.1, and one shutdown path: Ctrl-C or SIGTERM stops every child (SIGKILL after a grace
period), so nothing is left running.

The api-server runs as two processes of Airflow's own ``api-server`` command: ``--apps core`` (the UI and the
public REST API, on the announced port) and ``--apps execution`` (the Execution API that task processes report
through, on a private port). In one process, on SQLite, they stalled each other for the whole busy timeout:
the public API's audit log (``action_logging``, an ``async`` dependency) commits on the event loop, and when a
task's state update held SQLite's one write lock until its session's teardown, which that same event loop
dispatches, the commit waited 60 s for a lock that could only be released after it (seen with py-spy: every
component waiting on the lock, no thread holding it running). Split, each process's event loop only waits for
other processes.

The state is the one ``airloop demo`` and ``airloop run`` use (``AIRLOOP_HOME``): the UI shows their runs.
Login: user ``admin``, with a password generated once per home and kept in ``airflow/passwords.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from airloop.errors import AirloopError
from airloop.orchestration.runner import ensure_airflow_db, prepare_environment
from airloop.settings import REPO_ROOT, airloop_home

ADMIN_USER = "admin"


class StackError(AirloopError, RuntimeError):
    """Airflow's components could not start (already running on this home, or one exited); the message says
    which and where its log is."""


COMPONENTS = ("scheduler", "dag-processor", "triggerer", "execution-api", "api-server")
STOP_GRACE_S = 20.0  # SIGTERM, then SIGKILL: the whole group is gone within ~STOP_GRACE_S + a second


def _secret(path: Path) -> str:
    """A secret generated once per home (so every component, and every later start, agrees on it)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def admin_password() -> str:
    """The UI password of user ``admin`` for this AIRLOOP_HOME (created on first use)."""
    passwords = airloop_home() / "airflow" / "passwords.json"
    if not passwords.exists():
        passwords.parent.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}))
        passwords.chmod(0o600)
    return json.loads(passwords.read_text())[ADMIN_USER]


def stack_env(port: int, parallelism: int | None = None, execution_port: int | None = None) -> dict[str, str]:
    """The environment of every component: the embedded default plus the LocalExecutor sized to the cores,
    the api-server on 127.0.0.1:``port`` (its Execution API on ``execution_port``), SimpleAuthManager with one
    admin, and shared secrets."""
    env = prepare_environment()
    home = airloop_home() / "airflow"
    admin_password()
    cores = parallelism or os.cpu_count() or 2
    log_port, trigger_log_port = _free_port(), _free_port()
    stack = {
        **env,
        "AIRFLOW__CORE__EXECUTOR": "airloop.orchestration.executor.PreloadingLocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(cores),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(cores),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{execution_port or port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home / ".jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": _secret(home / ".api_secret"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # A new DAG file or pipeline YAML shows up within seconds, not minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # An idle scheduler looks again after 0.2 s, not Airflow's 1 s: each hand-over (a task's end to the next
        # task, an Asset event to its DAG run) waits for that look. The benchmark's lifecycle, one run each: 19.0 s
        # at 0.5, 16.7 s at 0.2; the idle scheduler then uses 7.9% of a core instead of 3.5%.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT / "plugins"), os.environ.get("PYTHONPATH")) if p),
        "PYTHONUNBUFFERED": "1",
    }
    return stack


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """The running components; ``url`` is the UI and REST API address."""

    port: int
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    lock: object = None  # the open lock file: one group of components per AIRLOOP_HOME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.processes.items()}

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to every component's process group at once, SIGKILL to whatever remains after
        ``grace_s``. Safe to call twice."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in running:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for proc in running:  # the group: LocalExecutor workers and task processes included
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def _take_lock(home: Path, port: int):
    """An exclusive lock on ``airflow/stack.lock`` for this process's lifetime: two schedulers on one SQLite
    metadata DB would fight over it. Raises StackError naming the running one."""
    import fcntl

    path = home / "stack.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - held until Stack.stop
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        running = fh.read().strip() or "another process"
        fh.close()
        raise StackError(
            f"Airflow is already running on {home.parent} ({running}); stop it (Ctrl-C in its terminal) first"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}, http://127.0.0.1:{port}")
    fh.flush()
    return fh


def start(port: int | None = None, parallelism: int | None = None, wait_s: float = 240) -> Stack:
    """Migrate the metadata DB (once, under its lock), start the four components and wait until the
    api-server answers; returns the Stack. Raises StackError with the log tails when it does not come up."""
    port = port or _free_port()
    execution_port = _free_port()
    lock = _take_lock(airloop_home() / "airflow", port)
    env = stack_env(port, parallelism, execution_port)
    with _environment(env):
        ensure_airflow_db()
        _unpause_airloop_dags()
    log_dir = airloop_home() / "logs" / "stack"
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(port=port, env=env, log_dir=log_dir, lock=lock)
    commands = component_commands(port, execution_port)
    try:
        for name in COMPONENTS:
            out = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child process
            stack.processes[name] = subprocess.Popen(
                commands[name], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            out.close()
        wait_healthy(stack, wait_s, f"http://127.0.0.1:{execution_port}/execution/health")
    except BaseException:
        stack.stop()
        raise
    return stack


def component_commands(port: int, execution_port: int) -> dict[str, list[str]]:
    """The command line of each of :data:`COMPONENTS`: the UI and public REST API on ``port``, the Execution
    API on ``execution_port``."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    return {
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],  # task logs are local files here
        "execution-api": [airflow, "api-server", "--apps", "execution", *_bind(execution_port)],
        "api-server": [airflow, "api-server", "--apps", "core", *_bind(port)],
    }


def _bind(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def wait_healthy(stack: Stack, timeout_s: float, *more_urls: str) -> None:
    """Wait until the api-server's health URL (and ``more_urls``) answer 200; StackError with the log tails when
    a component exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    pending = [f"{stack.url}/api/v2/monitor/health", *more_urls]
    while time.monotonic() < deadline:
        dead = [n for n, ok in stack.alive().items() if not ok]
        if dead:
            raise StackError(f"Airflow {', '.join(dead)} exited at start-up\n{logs_tail(stack)}")
        try:
            with urllib.request.urlopen(pending[0], timeout=5) as resp:
                if resp.status == 200:
                    pending.pop(0)
                    if not pending:
                        return
                    continue
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise StackError(f"the Airflow api-server did not answer at {pending[0]} in {timeout_s:.0f} s\n{logs_tail(stack)}")


def logs_tail(stack: Stack, chars: int = 1500) -> str:
    parts = []
    for name in stack.processes:
        path = stack.log_dir / f"{name}.log"
        if path.exists():
            parts.append(f"--- {name} ({path}):\n{path.read_text(errors='replace')[-chars:]}")
    return "\n".join(parts)


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _unpause_airloop_dags() -> None:
    """DAGs the in-process driver created are paused (``dags_are_paused_at_creation``); under the scheduler
    the loop runs, so Airloop's DAGs are unpaused (new ones are created unpaused by the stack's config)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id.like("airloop_%")).values(is_paused=False))


def serve_until_stopped(stack: Stack, say=print) -> int:
    """Block until Ctrl-C, SIGTERM or a component exits; then stop everything. Returns 0, or 1 when a
    component died on its own."""
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    while stopping["signal"] is None:
        dead = [n for n, ok in stack.alive().items() if not ok]
        if dead:
            say(f"Airflow {', '.join(dead)} exited; stopping the others (logs: {stack.log_dir})")
            code = 1
            break
        time.sleep(0.5)
    say("Stopping Airflow ...")
    stack.stop()
    say("Stopped.")
    return code
