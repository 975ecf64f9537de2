"""The production topology of docker-compose.yaml, as local processes: what the integration suite runs against.

- S3: the session's SeaweedFS (`weed mini`, tests/fixtures/services.py) with a fresh bucket for the lake and one for
  MLflow's artifacts;
- MLflow: `mlflow server --app-name airloop` on a fresh PostgreSQL database, artifacts proxied to S3
  (`--serve-artifacts`);
- Airflow with the CeleryExecutor: `api-server`, `scheduler`, `dag-processor` and one `celery worker`, on a
  fresh PostgreSQL metadata database, the Redis at 127.0.0.1:6379 as broker (a dedicated DB number and a
  queue name of its own, so parallel runs do not take each other's tasks), results in PostgreSQL, auth on.

Every server binds 127.0.0.1 on a free port; each process logs to a file under the work folder, and every
failure message ends with the tail of those logs. ``start_topology`` returns a :class:`Topology`; always call
``stop_topology`` (it stops the processes and drops the databases).
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
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import yaml
from fixtures.services import S3Server, check_redis, create_database, drop_database, free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS_DB = int(os.environ.get("AIRLOOP_TEST_REDIS_DB", "6"))  # Celery broker DB of the topology tests
ADMIN_USER = "admin"
# The churn pipeline as a cluster runs it: source and lake on S3, small and cheap to train.
PIPELINE_YAML = """\
name: churn
source: {{uri: "s3://{bucket}/landing/churn_*.csv"}}
target: churned
task: classification
id_column: customer_id
event_time_column: event_time
training:
  n_iter: 1
  cv_folds: 2
  candidates:
    - name: logistic_regression
      estimator: sklearn.linear_model.LogisticRegression
      params: {{max_iter: 300}}
      search_space: {{C: [1.0]}}
evaluation: {{primary_metric: roc_auc, min_value: 0.6}}
schedule: {{ingest: null, monitor: null}}
"""


class TopologyError(RuntimeError):
    """A service of the topology did not start or did not answer; the message ends with the process logs."""


@dataclass
class Topology:
    """The running services, their URLs, and the credentials a client needs."""

    workdir: Path
    s3: S3Server
    bucket: str
    airflow_url: str
    mlflow_url: str
    admin_password: str
    queue: str
    broker_url: str
    history_day: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)

    @property
    def lake_uri(self) -> str:
        return f"s3://{self.bucket}/lake"

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def logs_tail(self, chars: int = 3000) -> str:
        """The end of every process log, for failure messages."""
        parts = []
        for name in sorted(self.workdir.joinpath("logs").glob("*.log")):
            text = name.read_text(errors="replace")
            parts.append(f"----- {name.name} (last {chars} chars) -----\n{text[-chars:]}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        """Raise TopologyError naming any process that has exited."""
        dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise TopologyError(f"topology processes exited: {dead}\n{self.logs_tail()}")

    def airflow_token(self, username: str = ADMIN_USER, password: str | None = None) -> str:
        """A JWT from the api-server's /auth/token, as the web UI's login form gets one."""
        resp = httpx.post(
            f"{self.airflow_url}/auth/token",
            json={"username": username, "password": self.admin_password if password is None else password},
            timeout=30,
        )
        if resp.status_code != 201:
            raise TopologyError(f"POST /auth/token: expected 201, found {resp.status_code}: {resp.text[:500]}")
        return resp.json()["access_token"]

    def airflow_client(self) -> httpx.Client:
        """An httpx client on the Airflow REST API, authenticated with a fresh token."""
        return httpx.Client(
            base_url=self.airflow_url,
            headers={"Authorization": f"Bearer {self.airflow_token()}"},
            timeout=60,
        )


def _popen(top: Topology, name: str, args: list[str]) -> subprocess.Popen:
    log = top.log_path(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        args,
        env=top.env,
        cwd=top.workdir,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so stop_topology ends its children too
    )
    top.processes[name] = proc
    return proc


def _wait_http(top: Topology, url: str, what: str, timeout_s: float, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        top.check_alive()
        try:
            resp = httpx.get(url, timeout=5)
            if resp.status_code in ok:
                return
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        except httpx.HTTPError as err:
            last = f"{type(err).__name__}: {err}"
        time.sleep(0.5)
    raise TopologyError(f"{what} at {url} not ready within {timeout_s:.0f} s ({last})\n{top.logs_tail()}")


def _broker_url() -> str:
    parsed = urlparse(check_redis())
    return urlunparse(parsed._replace(path=f"/{REDIS_DB}"))


def _sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def _upload_simulated_data(top: Topology) -> str:
    """Simulate a small churn history and land it in s3://bucket/landing/; returns the history batch id."""
    from airloop.demo.simulate import SimulationSpec, simulate

    written = simulate(top.workdir / "sim", SimulationSpec(history_rows=800, daily_rows=200, days=1))
    client = top.s3.client()
    for path in sorted((top.workdir / "sim" / "landing").glob("*.csv")):
        client.put_object(Bucket=top.bucket, Key=f"landing/{path.name}", Body=path.read_bytes())
    return str(written["history_day"])


def _base_env(top: Topology) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "AIRLOOP", "AWS_"))}
    return {
        **clean,
        **top.s3.env(),
        "GIT_PYTHON_REFRESH": "quiet",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def _airflow_env(top: Topology, db_url: str, api_port: int, pipelines: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    home = top.workdir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({ADMIN_USER: top.admin_password}))
    passwords.chmod(0o600)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _sqlalchemy_url(db_url),
        "AIRFLOW__CELERY__BROKER_URL": top.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "airloop.orchestration.celery_config.CELERY_CONFIG",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": top.queue,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        # Auth: Airflow 3's SimpleAuthManager (no FAB provider is installed), one admin whose password is in
        # a file we write, so nothing is generated and printed.
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        # The execution API: workers fetch and report task state through the api-server, with JWTs that the
        # scheduler signs and the api-server checks, so every process shares one secret.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        # The worker serves its task logs to the api-server on this port (8793 would collide between runs).
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRLOOP_HOME": str(top.workdir / "airloop_home"),
        "AIRLOOP_PIPELINES_DIR": str(pipelines),
        "AIRLOOP_LAKE_URI": top.lake_uri,
        "MLFLOW_TRACKING_URI": top.mlflow_url,
        "AIRLOOP_MLFLOW_UI_URL": top.mlflow_url,
    }


def start_topology(
    workdir: Path,
    s3: S3Server,
    timeout_s: float = 240,
    pipeline_yaml: str = PIPELINE_YAML,
    upload: Callable[[Topology], str] | None = None,
) -> Topology:
    """Start MLflow and Airflow (Celery) against real Postgres, Redis and S3; returns the running Topology.

    The one pipeline is ``pipeline_yaml`` (``{bucket}`` is the lake's bucket); ``upload`` lands its source data
    in that bucket and returns the batch id to run (default: the simulated churn history).

    Raises TopologyError (with the process logs) when a service does not come up within ``timeout_s``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    mlflow_port, api_port = free_port(), free_port()
    top = Topology(
        workdir=workdir,
        s3=s3,
        bucket=f"airloop-lake-{uuid.uuid4().hex[:10]}",
        airflow_url=f"http://127.0.0.1:{api_port}",
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        admin_password=secrets.token_urlsafe(16),
        queue=f"airloop-{uuid.uuid4().hex[:10]}",
        broker_url=_broker_url(),
        history_day="",
        env={},
    )
    try:
        artifacts_bucket = f"airloop-artifacts-{uuid.uuid4().hex[:10]}"
        mlflow_db, airflow_db = create_database("airloop_mlflow"), create_database("airloop_airflow")
        top.databases += [mlflow_db, airflow_db]
        base = _base_env(top)
        # The buckets are made by the module the compose service create-buckets runs.
        made = subprocess.run(
            [sys.executable, "-m", "airloop.store.buckets", top.bucket, artifacts_bucket],
            env={
                **base,
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "plugins"), base.get("PYTHONPATH")) if p),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        if made.returncode != 0:
            raise TopologyError(f"python -m airloop.store.buckets failed: {made.stdout}{made.stderr}")
        top.history_day = (upload or _upload_simulated_data)(top)
        pipelines = workdir / "pipelines"
        pipelines.mkdir(exist_ok=True)
        text = pipeline_yaml.format(bucket=top.bucket)
        (pipelines / f"{yaml.safe_load(text)['name']}.yaml").write_text(text)

        top.env = {**base, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
        _popen(
            top,
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--app-name=airloop",  # opens in the training view (store/mlflow_app.py)
                "--host=127.0.0.1",
                f"--port={mlflow_port}",
                "--workers=1",
                f"--backend-store-uri={_sqlalchemy_url(mlflow_db)}",
                f"--artifacts-destination=s3://{artifacts_bucket}/mlflow",
                "--serve-artifacts",
            ],
        )
        top.env = {**base, **_airflow_env(top, airflow_db, api_port, pipelines)}
        migrate = _popen(top, "airflow-db-migrate", [str(BIN / "airflow"), "db", "migrate"])
        deadline = time.monotonic() + timeout_s
        while migrate.poll() is None:  # MLflow migrates its own database meanwhile
            if time.monotonic() > deadline:
                raise TopologyError(f"airflow db migrate did not finish in {timeout_s:.0f} s\n{top.logs_tail()}")
            time.sleep(0.5)
        del top.processes["airflow-db-migrate"]
        if migrate.returncode != 0:
            raise TopologyError(f"airflow db migrate failed ({migrate.returncode})\n{top.logs_tail()}")

        airflow = str(BIN / "airflow")
        _popen(top, "api-server", [airflow, "api-server", "--host=127.0.0.1", f"--port={api_port}", "--workers=1"])
        _popen(top, "scheduler", [airflow, "scheduler", "--skip-serve-logs"])
        _popen(top, "dag-processor", [airflow, "dag-processor"])
        _popen(
            top,
            "celery-worker",
            [
                airflow,
                "celery",
                "worker",
                f"--queues={top.queue}",
                f"--celery-hostname={top.queue}@%h",
                "--concurrency=2",
                "--without-mingle",
                "--without-gossip",
            ],
        )
        remaining = max(deadline - time.monotonic(), 30)
        _wait_http(top, f"{top.mlflow_url}/health", "MLflow server", remaining)
        _wait_http(top, f"{top.airflow_url}/api/v2/monitor/health", "Airflow api-server", remaining)
        return top
    except BaseException:
        stop_topology(top)
        raise


def stop_topology(top: Topology, timeout_s: float = 10) -> None:
    """Stop every process, drop the databases and the broker queue. Safe to call twice.

    All processes get SIGTERM at once (a shutdown costs the slowest process, not the sum), then SIGKILL after
    ``timeout_s``.
    """
    running = [p for p in top.processes.values() if p.poll() is None]
    top.processes.clear()
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in running:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for url in top.databases:
        drop_database(url)
    top.databases.clear()
    if top.broker_url:
        import redis

        client = redis.Redis.from_url(top.broker_url, socket_connect_timeout=3)
        stale = [top.queue, *client.scan_iter(match=f"_kombu.binding*{top.queue}", count=1000)]
        client.delete(*stale)
        client.close()
