"""An Airflow api-server (with the Airloop plugin) and an MLflow UI on an AIRLOOP_HOME, for the UI tests.

The api-server uses Airflow 3's SimpleAuthManager with one admin whose password is in a file we write, on a free
port of 127.0.0.1; both servers are stopped by :meth:`UI.stop`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from services import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN = "airloop-admin"


def airloop_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``airloop`` command on ``home`` (nothing inherited from AIRFLOW/MLFLOW/AIRLOOP)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "AIRLOOP"))}
    env.update({"AIRLOOP_HOME": str(home), "PYTHONPATH": str(REPO / "plugins"), "GIT_PYTHON_REFRESH": "quiet"})
    env.update(extra)
    return env


def airloop(args: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airloop.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@dataclass
class UI:
    workdir: Path
    airflow_url: str
    mlflow_url: str
    password: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def token(self, password: str | None = None) -> str:
        resp = httpx.post(
            f"{self.airflow_url}/auth/token",
            json={"username": ADMIN, "password": self.password if password is None else password},
            timeout=30,
        )
        if resp.status_code != 201:
            raise RuntimeError(f"POST /auth/token: expected 201, found {resp.status_code}: {resp.text[:300]}")
        return resp.json()["access_token"]

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in self.processes:
            path = self.workdir / f"{name}.log"
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def _wait(ui: UI, url: str, what: str, timeout_s: float) -> None:
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        dead = {n: p.returncode for n, p in ui.processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"{what}: processes exited {dead}\n{ui.log_tail()}")
        try:
            resp = httpx.get(url, timeout=5)
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as err:
            last = f"{type(err).__name__}: {err}"
        time.sleep(0.5)
    raise RuntimeError(f"{what} at {url} not ready within {timeout_s:.0f} s ({last})\n{ui.log_tail()}")


def start_ui(home: Path, workdir: Path, env: dict[str, str], timeout_s: float = 300) -> UI:
    """Start ``airflow api-server`` and ``mlflow ui`` on the state under ``home`` (made by ``airloop run``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    api_port, mlflow_port = free_port(), free_port()
    password = secrets.token_urlsafe(12)
    passwords = workdir / "passwords.json"
    passwords.write_text(json.dumps({ADMIN: password}))
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    airflow_env = {
        **env,
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "AIRLOOP_MLFLOW_UI_URL": mlflow_url,
    }
    ui = UI(workdir, f"http://127.0.0.1:{api_port}", mlflow_url, password, airflow_env)
    commands = {
        "api-server": [str(BIN / "airflow"), "api-server", "--host=127.0.0.1", f"--port={api_port}", "--workers=1"],
        "mlflow": [
            str(BIN / "mlflow"),
            "server",
            "--host=127.0.0.1",
            f"--port={mlflow_port}",
            "--workers=1",
            f"--backend-store-uri=sqlite:///{home / 'mlflow' / 'mlflow.db'}",
            f"--default-artifact-root={(home / 'mlflow' / 'artifacts').as_uri()}",
        ],
    }
    try:
        for name, args in commands.items():
            log = (workdir / f"{name}.log").open("w")
            ui.processes[name] = subprocess.Popen(
                args, env=airflow_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait(ui, f"{ui.airflow_url}/api/v2/monitor/health", "Airflow api-server", timeout_s)
        _wait(ui, f"{mlflow_url}/health", "MLflow server", timeout_s)
        return ui
    except BaseException:
        ui.stop()
        raise
