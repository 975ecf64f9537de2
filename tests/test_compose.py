"""docker-compose.yaml itself: complete services, health checks, every variable documented, no inline secrets.

No Docker here; these read the file as Compose does (YAML with merge keys, ``${VAR}`` interpolation).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (REPO / "docker-compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict] = COMPOSE["services"]
# ${VAR}, ${VAR:-default}, ${VAR:?err}, $VAR; "$$" is a literal dollar for the container's shell.
VARIABLE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|KEY|KEY_ID)$")  # names of values that must come from .env
ONLY_A_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


def documented_variables() -> set[str]:
    """Names set (or shown commented out) in .env.example."""
    text = (REPO / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def one_shot_services() -> set[str]:
    """Services others wait on to *finish* (service_completed_successfully): they need no health check."""
    return {
        name
        for svc in SERVICES.values()
        for name, dep in (svc.get("depends_on") or {}).items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_an_image_or_build_and_a_command(name):
    svc = SERVICES[name]
    assert svc.get("image") or svc.get("build"), f"service {name}: expected `image` or `build`, found neither"
    assert svc.get("command"), f"service {name}: expected an explicit `command`, found none"


def test_the_topology_is_complete():
    commands = {name: " ".join(map(str, svc["command"])) for name, svc in SERVICES.items()}
    expected = {
        "api-server": "airflow api-server",
        "scheduler": "airflow scheduler",
        "dag-processor": "airflow dag-processor",
        "triggerer": "airflow triggerer",
        "celery worker": "airflow celery worker",
        "mlflow server": "mlflow server",
        "airloop serve": "airloop serve churn",
    }
    for what, cmd in expected.items():
        assert any(c.startswith(cmd) for c in commands.values()), f"no service runs `{cmd}` ({what})"
    images = " ".join(str(svc.get("image", "")) for svc in SERVICES.values())
    assert "postgres:" in images and "redis:" in images and "seaweedfs" in images
    mlflow = next(c for c in commands.values() if c.startswith("mlflow server"))
    for flag in (
        "--app-name airloop-basic-auth",
        "--serve-artifacts",
        "--backend-store-uri postgresql",
        "--artifacts-destination s3://",
    ):
        assert flag in mlflow, f"mlflow server: expected {flag!r} in {mlflow!r}"


def test_airflow_runs_celery_with_auth_and_the_execution_api():
    worker = environment(SERVICES["airflow-worker"])
    assert worker["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert worker["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert worker["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert worker["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert worker["AIRLOOP_LAKE_URI"].startswith("s3://") and worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # One JWT secret for every Airflow service: the scheduler signs what the api-server checks.
    secrets = {
        environment(SERVICES[n]).get("AIRFLOW__API_AUTH__JWT_SECRET") for n in SERVICES if n.startswith("airflow-")
    }
    assert secrets == {"${AIRFLOW_JWT_SECRET}"}
    assert "airflow-auth:/opt/airflow/auth" in SERVICES["airflow-apiserver"]["volumes"]


def test_workers_can_be_scaled():
    worker = SERVICES["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker, "a fixed name or host port blocks --scale"


def test_long_running_services_have_health_checks_and_dependencies_wait_for_them():
    one_shot = one_shot_services()
    assert one_shot == {"airflow-init", "create-buckets"}
    for name, svc in SERVICES.items():
        if name not in one_shot:
            check = svc.get("healthcheck") or {}
            assert check.get("test"), f"service {name}: expected a healthcheck with a test, found {check}"
            assert svc.get("restart"), f"service {name}: expected a restart policy"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"service {name} depends on unknown service {dep}"
            condition = cond.get("condition") if isinstance(cond, dict) else None
            assert condition in ("service_healthy", "service_completed_successfully"), (
                f"service {name} -> {dep}: expected a health or completion condition, found {condition}"
            )
            if condition == "service_healthy":
                assert SERVICES[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; {dep} has no check"


def test_every_variable_is_documented_in_env_example():
    used = {a or b for a, b in VARIABLE.findall(COMPOSE_TEXT)}
    assert used, "found no ${VAR} in docker-compose.yaml: the pattern is broken"
    missing = used - documented_variables()
    assert not missing, f".env.example: expected every variable docker-compose.yaml uses, missing {sorted(missing)}"
    unused = documented_variables() - used
    assert not unused, f".env.example documents variables docker-compose.yaml never uses: {sorted(unused)}"


def test_no_secret_is_written_inline():
    for name, svc in SERVICES.items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key):
                assert ONLY_A_REFERENCE.match(value), (
                    f"service {name}: {key} must be a ${{VAR}} from .env, found {value!r}"
                )
    # Credentials inside URLs (postgresql://user:pass@host, redis://:pass@host) must be references too.
    for _user, password in re.findall(r"://([^:/@\s\"']*):([^@/\s\"']+)@", COMPOSE_TEXT):
        assert ONLY_A_REFERENCE.match(password), f"a URL in docker-compose.yaml has an inline password {password!r}"
    for path in (REPO / "include" / "compose").rglob("*"):
        if path.is_file() and path.suffix in (".ini", ".json", ".sh", ".yaml", ".sql"):
            text = path.read_text()
            literal = re.search(r"(password|secret_?key)[\"']?\s*[=:]\s*(?![$%?{])[\"']?\w", text, re.IGNORECASE)
            assert not literal, f"{path}: a secret written inline ({literal.group(0)!r}); read it from the environment"


def test_env_is_ignored_and_bind_mounts_exist():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, capture_output=True, timeout=30)
    assert ignored.returncode == 0, ".env must be listed in .gitignore (it holds the secrets)"
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes") or []:
            host = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", str(volume)).split(":", 1)[0]
            if host.startswith("./"):
                assert (REPO / host).exists(), f"service {name}: bind mount {host} does not exist"
            else:
                assert host in (COMPOSE.get("volumes") or {}), f"service {name}: volume {host} is not declared"


def test_compose_pipelines_are_valid_and_read_from_s3(monkeypatch):
    """Celery workers share no disk: the pipelines compose mounts must read their data from S3."""
    from airloop.config import load_pipeline

    monkeypatch.setenv("S3_BUCKET_LAKE", "airloop-lake")
    files = sorted((REPO / "include" / "compose" / "pipelines").glob("*.yaml"))
    assert files, "include/compose/pipelines/ has no pipeline YAML"
    for path in files:
        cfg = load_pipeline(path)
        uris = [cfg.source.uri] + ([cfg.labels.uri] if cfg.labels else [])
        assert all(u.startswith("s3://airloop-lake/") for u in uris), (
            f"{path.name}: expected s3:// sources, found {uris}"
        )


def test_ports_are_published_on_loopback_unless_the_user_opts_in():
    """Every published port binds 127.0.0.1 by default (AIRLOOP_PUBLISH_HOST in .env opts in to more)."""
    loopback = re.compile(r"^(127\.0\.0\.1|\$\{AIRLOOP_PUBLISH_HOST:-127\.0\.0\.1\}):\d+:\d+$")
    for name, svc in SERVICES.items():
        for port in svc.get("ports") or []:
            assert loopback.match(str(port)), f"service {name}: port {port!r} is published on every interface"


def test_the_model_api_requires_a_bearer_token():
    serve = next(svc for svc in SERVICES.values() if " ".join(map(str, svc["command"])).startswith("airloop serve"))
    assert environment(serve).get("AIRLOOP_SERVE_TOKEN") == "${AIRLOOP_SERVE_TOKEN}"
    assert "/health" in " ".join(serve["healthcheck"]["test"])  # the health check needs no token
