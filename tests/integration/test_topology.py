"""The production topology (docker-compose.yaml) as local processes, driven the way a user drives it: through
Airflow's REST API with a login, then checked through MLflow's REST API and S3.

The churn lifecycle is triggered once per module (ingest with a `batch_id`); the Assets chain validate → train
→ evaluate → promote through the real scheduler, dag-processor and Celery worker. See tests/integration/topology.py
for what runs and how it is configured.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from topology import REPO, Topology, TopologyError, start_topology, stop_topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PIPELINE = "churn"
LIFECYCLE = ("ingest", "validate", "train", "evaluate", "promote")
ALL_DAGS = (*LIFECYCLE, "retrain", "score", "monitor")
DAGS_PARSED_TIMEOUT_S = 180
LIFECYCLE_TIMEOUT_S = 600
POLL_S = 3


def dag_id(stage: str) -> str:
    return f"airloop_{PIPELINE}_{stage}"


@pytest.fixture(scope="module")
def topology(s3_server, tmp_path_factory, request):
    failed_before = request.session.testsfailed
    top = start_topology(tmp_path_factory.mktemp("topology"), s3_server)
    yield top
    stop_topology(top)
    if request.session.testsfailed > failed_before:  # the process logs, beside pytest's own report
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(f"\ntopology logs in {top.workdir / 'logs'}:\n{top.logs_tail()}")


@pytest.fixture(scope="module")
def api(topology):
    with topology.airflow_client() as client:
        yield client


def task_instances(api: httpx.Client) -> list[dict]:
    resp = api.get(
        "/api/v2/dags/~/dagRuns/~/taskInstances", params={"dag_id_pattern": f"airloop_{PIPELINE}_", "limit": 200}
    )
    resp.raise_for_status()
    return resp.json()["task_instances"]


def task_log(api: httpx.Client, ti: dict) -> str:
    """The text of one task try's log, read through the REST API as the UI reads it."""
    resp = api.get(
        f"/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}"
        f"/logs/{max(ti['try_number'], 1)}",
        params={"map_index": ti["map_index"], "full_content": True},
        headers={"Accept": "application/json"},
    )
    resp.raise_for_status()
    content = resp.json()["content"]
    return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)


def wait_for_dags(api: httpx.Client, top: Topology) -> None:
    """Until the dag-processor has parsed the pipeline's eight DAGs."""
    deadline = time.monotonic() + DAGS_PARSED_TIMEOUT_S
    found: set[str] = set()
    while time.monotonic() < deadline:
        top.check_alive()
        resp = api.get("/api/v2/dags", params={"dag_id_pattern": f"airloop_{PIPELINE}_", "limit": 100})
        resp.raise_for_status()
        found = {d["dag_id"] for d in resp.json()["dags"]}
        if {dag_id(s) for s in ALL_DAGS} <= found:
            return
        time.sleep(POLL_S)
    raise TopologyError(
        f"the dag-processor did not parse the {PIPELINE} DAGs within {DAGS_PARSED_TIMEOUT_S} s "
        f"(found {sorted(found)})\n{top.logs_tail()}"
    )


def wait_for_promotion(api: httpx.Client, top: Topology) -> dict[str, dict]:
    """Until a promote run succeeds; returns the newest run of each lifecycle DAG. Fails at once, with the
    task's own log, when a task fails or is up for retry (a healthy topology needs no retries)."""
    deadline = time.monotonic() + LIFECYCLE_TIMEOUT_S
    runs: dict[str, dict] = {}
    while time.monotonic() < deadline:
        top.check_alive()
        resp = api.get("/api/v2/dags/~/dagRuns", params={"dag_id_pattern": f"airloop_{PIPELINE}_", "limit": 100})
        resp.raise_for_status()
        runs = {r["dag_id"]: r for r in sorted(resp.json()["dag_runs"], key=lambda r: r["run_after"])}
        broken = [ti for ti in task_instances(api) if ti["state"] in ("failed", "up_for_retry", "upstream_failed")]
        if broken:
            ti = broken[0]
            raise AssertionError(
                f"{ti['dag_id']}.{ti['task_id']} is {ti['state']}; its log through the API:\n"
                f"{task_log(api, ti)[-4000:]}\n{top.logs_tail()}"
            )
        if runs.get(dag_id("promote"), {}).get("state") == "success":
            return {stage: runs[dag_id(stage)] for stage in LIFECYCLE}
        time.sleep(POLL_S)
    states = {d: r["state"] for d, r in runs.items()}
    raise AssertionError(f"no successful promote run within {LIFECYCLE_TIMEOUT_S} s; runs: {states}\n{top.logs_tail()}")


@pytest.fixture(scope="module")
def lifecycle(topology, api) -> dict[str, dict]:
    """Unpause the pipeline's DAGs and trigger ingest with a batch_id, as the UI's trigger form does; wait for
    the Assets to carry the batch to promotion. Returns the newest DAG run of each lifecycle stage."""
    wait_for_dags(api, topology)
    for stage in ALL_DAGS:
        resp = api.patch(f"/api/v2/dags/{dag_id(stage)}", json={"is_paused": False})
        assert resp.status_code == 200, f"unpause {dag_id(stage)}: {resp.status_code} {resp.text[:300]}"
    resp = api.post(
        f"/api/v2/dags/{dag_id('ingest')}/dagRuns",
        json={"logical_date": None, "conf": {"batch_id": topology.history_day}},
    )
    assert resp.status_code == 200, f"trigger {dag_id('ingest')}: {resp.status_code} {resp.text[:500]}"
    started = time.monotonic()
    runs = wait_for_promotion(api, topology)
    print(f"lifecycle through Celery: {time.monotonic() - started:.0f} s")
    return runs


def test_api_refuses_anonymous_and_wrong_credentials(topology):
    assert httpx.get(f"{topology.airflow_url}/api/v2/dags", timeout=30).status_code == 401
    bad = httpx.get(f"{topology.airflow_url}/api/v2/dags", headers={"Authorization": "Bearer x.y.z"}, timeout=30)
    assert bad.status_code in (401, 403)
    with pytest.raises(TopologyError, match="expected 201, found 401"):
        topology.airflow_token(password="not-the-password")


def test_lifecycle_chains_through_assets_on_the_celery_worker(lifecycle, api, topology):
    assert {s: r["state"] for s, r in lifecycle.items()} == dict.fromkeys(LIFECYCLE, "success")
    assert lifecycle["ingest"]["run_type"] == "manual"
    assert lifecycle["ingest"]["conf"] == {"batch_id": topology.history_day}
    for stage in LIFECYCLE[1:]:
        assert lifecycle[stage]["run_type"] == "asset_triggered", f"{stage} was not started by its Asset"
    ran = [ti for ti in task_instances(api) if ti["dag_id"] in {dag_id(s) for s in LIFECYCLE}]
    assert {ti["task_id"] for ti in ran} >= {"ingest", "validate", "train_candidate", "evaluate", "promote"}
    # Every task went through the broker to our worker: our private queue, our worker's host.
    assert {ti["queue"] for ti in ran} == {topology.queue}
    assert all(ti["hostname"] for ti in ran)


def test_champion_is_in_the_registry_with_artifacts_on_s3(lifecycle, topology):
    mlflow = f"{topology.mlflow_url}/api/2.0/mlflow"
    model = httpx.get(f"{mlflow}/registered-models/get", params={"name": f"airloop-{PIPELINE}"}, timeout=30)
    assert model.status_code == 200, model.text[:500]
    aliases = {a["alias"]: a["version"] for a in model.json()["registered_model"].get("aliases", [])}
    assert "champion" in aliases, f"no champion alias on airloop-{PIPELINE}: {aliases}"
    version = httpx.get(
        f"{mlflow}/registered-models/alias", params={"name": f"airloop-{PIPELINE}", "alias": "champion"}, timeout=30
    ).json()["model_version"]
    tags = {t["key"]: t["value"] for t in version.get("tags", [])}
    assert tags.get("airloop.promoted_by") == "airloop-gate"
    # Artifacts went through the server (--serve-artifacts) into S3: the workers have no artifact store settings.
    run = httpx.get(f"{mlflow}/runs/get", params={"run_id": version["run_id"]}, timeout=30).json()["run"]
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:")
    s3 = topology.s3.client()
    keys = [o["Key"] for b in s3.list_buckets()["Buckets"] for o in _objects(s3, b["Name"], "mlflow/")]
    assert any(k.endswith("/model.skops") for k in keys), f"no model artifact in S3: {keys[:20]}"
    assert any(k.endswith(f"{version['run_id']}/artifacts/gate/verdict.json") for k in keys)


def _objects(s3, bucket: str, prefix: str) -> list[dict]:
    return s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])


def test_lake_objects_are_in_s3(lifecycle, topology):
    day = topology.history_day
    keys = {o["Key"] for o in _objects(topology.s3.client(), topology.bucket, f"lake/{PIPELINE}/")}
    for expected in (
        f"lake/{PIPELINE}/raw/date={day}/churn_{day}.csv",
        f"lake/{PIPELINE}/staged/date={day}/part-0.parquet",
        f"lake/{PIPELINE}/validated/date={day}/part-0.parquet",
        f"lake/{PIPELINE}/manifests/{day}.json",
    ):
        assert expected in keys, f"{expected} missing from s3://{topology.bucket}; found {sorted(keys)}"
    assert any(k.startswith(f"lake/{PIPELINE}/training/") and k.endswith("/train.parquet") for k in keys)
    assert not (topology.workdir / "airloop_home" / "lake").exists(), "something wrote a local lake"


def test_task_logs_are_readable_through_the_api(lifecycle, api):
    by_task = {(ti["dag_id"], ti["task_id"]): ti for ti in task_instances(api)}
    # Each task's log ends with the summary block of the stage function it called (airloop.orchestration.dagkit.call).
    for stage, task, function in (
        ("ingest", "ingest", "ingest_batch"),
        ("validate", "validate", "validate_batch"),
        ("promote", "promote", "promote"),
    ):
        text = task_log(api, by_task[(dag_id(stage), task)])
        assert f"Airloop summary: {function}" in text, f"{dag_id(stage)}.{task} log:\n{text[-2000:]}"


def test_buckets_module_creates_once_and_refuses_wrong_keys_at_once(s3_server):
    """`python -m airloop.store.buckets`, as the compose service create-buckets runs it."""
    name = f"airloop-probe-{os.getpid()}"

    def run(bucket: str, reader: bool = False) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), **s3_server.env(reader=reader)}
        cmd = [sys.executable, "-m", "airloop.store.buckets", bucket]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    first, again = run(name), run(name)
    assert (first.returncode, first.stdout.strip()) == (0, f"created: {name}"), first.stderr
    assert (again.returncode, again.stdout.strip()) == (0, "created: none (all exist)"), again.stderr
    started = time.monotonic()
    refused = run(f"{name}-x", reader=True)  # the read-only identity may not create buckets
    assert refused.returncode == 1 and f"bucket '{name}-x'" in refused.stderr and "refused" in refused.stderr
    assert time.monotonic() - started < 30, "wrong keys should fail at once, not after the retry timeout"
