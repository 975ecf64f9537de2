"""Where Airloop keeps its state. Everything is derived from the environment, lazily, with no side effects.

``AIRLOOP_HOME`` (default ``.airloop/`` in the source checkout) holds the embedded default: Airflow's SQLite
database, MLflow's SQLite store and artifacts, and the local lake. Each location can be overridden on its own
(``AIRLOOP_LAKE_URI``, ``MLFLOW_TRACKING_URI``, ...) so the same code runs against PostgreSQL and S3.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def airloop_home() -> Path:
    """The folder holding all embedded-default state; ``rm -rf`` of it is a clean reset."""
    env = os.environ.get("AIRLOOP_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT / ".airloop"


def pipelines_dir() -> Path:
    """The folder of pipeline YAML files (``AIRLOOP_PIPELINES_DIR`` moves it)."""
    env = os.environ.get("AIRLOOP_PIPELINES_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "include" / "pipelines"


def suites_dir() -> Path:
    """The folder of reviewed Great Expectations suites (``AIRLOOP_SUITES_DIR`` moves it)."""
    env = os.environ.get("AIRLOOP_SUITES_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "include" / "gx"


def lake_uri() -> str:
    """Root URI of the data lake: ``file://`` on one machine, ``s3://bucket/prefix`` in a cluster."""
    env = os.environ.get("AIRLOOP_LAKE_URI")
    if env:
        return env.rstrip("/")
    return (airloop_home() / "lake").as_uri()


def mlflow_tracking_uri() -> str:
    """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` if set, else a SQLite store under AIRLOOP_HOME."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{airloop_home() / 'mlflow' / 'mlflow.db'}"


def mlflow_artifact_root() -> str | None:
    """Where new experiments store artifacts; None lets a tracking server decide (``--serve-artifacts``)."""
    env = os.environ.get("AIRLOOP_ARTIFACT_URI")
    if env:
        return env.rstrip("/")
    if mlflow_tracking_uri().startswith("sqlite:"):
        return (airloop_home() / "mlflow" / "artifacts").as_uri()
    return None


def airflow_env() -> dict[str, str]:
    """Environment for running Airflow on the embedded default (SQLite under AIRLOOP_HOME).

    Values already in the environment win, so a cluster configuration is never overridden.
    """
    home = airloop_home()
    defaults = {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRLOOP_HOME": str(home),
        "MLFLOW_TRACKING_URI": mlflow_tracking_uri(),
        "GIT_PYTHON_REFRESH": "quiet",
        # MLflow's telemetry fetches its config from the internet in a thread, then pops its session id from
        # os.environ; a task iterating os.environ meanwhile (GX's config provider does) failed with KeyError.
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env = {k: os.environ.get(k, v) for k, v in defaults.items()}
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:"):
        # Every component and task process writes to the one SQLite file; wait for the lock for up to
        # SQLITE_CONNECT_ARGS["timeout"] seconds instead of sqlite3's 5 s default.
        for suffix, name in (("", "SQLITE_CONNECT_ARGS"), ("_ASYNC", "SQLITE_CONNECT_ARGS_ASYNC")):
            var = f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS{suffix}"
            env[var] = os.environ.get(var, f"airloop.settings.{name}")
    return env


# sqlite3's (and aiosqlite's) busy timeout for Airflow's metadata DB on the embedded default.
SQLITE_CONNECT_ARGS = {"timeout": 60}
SQLITE_CONNECT_ARGS_ASYNC = {"timeout": 60}  # its own dict: Airflow adds keys to the sync one

SIGNING_KEY_ENV = "AIRLOOP_MODEL_SIGNING_KEY"
SIGNING_CONNECTION_ENV = "AIRFLOW_CONN_AIRLOOP_MODEL_SIGNING"


def model_signing_key() -> bytes:
    """The key the gate signs blessed model versions with (see docs/security.md), first found of:

    - ``AIRLOOP_MODEL_SIGNING_KEY`` (the key itself);
    - the password of the Airflow Connection ``airloop_model_signing`` given as ``AIRFLOW_CONN_AIRLOOP_MODEL_SIGNING``
      (JSON or URI form, read without importing Airflow);
    - ``$AIRLOOP_HOME/secrets/model-signing.key``, created (32 random bytes, mode 0600) on first use: right for
      one machine; a cluster sets one of the two above on every worker and server.
    """
    import json
    import secrets
    from urllib.parse import unquote, urlparse

    env = os.environ.get(SIGNING_KEY_ENV)
    if env:
        return env.encode()
    conn = os.environ.get(SIGNING_CONNECTION_ENV)
    if conn:
        conn = conn.strip()
        password = json.loads(conn).get("password") if conn.startswith("{") else urlparse(conn).password
        if not password:
            raise ValueError(f"{SIGNING_CONNECTION_ENV}: expected a connection with a password (the key), found none")
        return unquote(password).encode()
    path = airloop_home() / "secrets" / "model-signing.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # atomic: a concurrent first use keeps the one key that won
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode()
