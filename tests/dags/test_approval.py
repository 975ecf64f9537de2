"""Promotion with `promotion.approval: required` waits in Airflow's HITL ApprovalOperator.

The promote DAG runs through Airflow (``dag.test`` via airloop.orchestration.runner) in the main thread of a child
process;
another thread of that process plays the approver exactly as the api-server's Required Actions endpoint does
(``update_hitl_detail`` on the same SQLite metadata DB). dag.test never answers a HITL task by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, time, traceback
    from pathlib import Path
    import numpy as np, pandas as pd, mlflow
    from sklearn.linear_model import LogisticRegression
    from airloop.store import promotions, registry, tracking
    from airloop.config import get_pipeline
    from airloop.orchestration.runner import Runner
    from airloop.model.train import log_sklearn_model

    decision, tmp = sys.argv[1], Path(os.environ["AIRLOOP_HOME"])
    cfg = get_pipeline("gated")
    exp = tracking.ensure_experiment(cfg)
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    versions = []
    for i in range(2):
        with mlflow.start_run(experiment_id=exp) as run:
            info, _ = log_sklearn_model(LogisticRegression().fit(X, (X["a"] + i * X["b"] > 0).astype(int)), X)
            mlflow.log_dict({"blessed": True, "metric": "roc_auc", "challenger_metric": 0.91 + i / 100,
                             "champion_metric": 0.9, "ci": [0.001, 0.02], "metrics": {"roc_auc": 0.91},
                             "reasons": ["PASS champion: roc_auc credibly better"]}, "gate/verdict.json")
        versions.append(registry.register(cfg, info.model_uri, run.info.run_id))
    promotions.promote(cfg, versions[0], reason="first model", actor="setup")
    promotions.set_challenger(cfg, versions[1])

    runner = Runner()

    from sqlalchemy import select
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    class Approver:  # what the auth manager hands the route: a user with an id and a name
        def get_id(self): return "u-42"
        def get_name(self): return "alice"

    seen = {}

    def approve():
        # dag.test must own the main thread (signal handlers); the approver answers from this one.
        try:
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and not seen:
                with create_session() as session:
                    ti = session.scalars(select(TaskInstance).where(
                        TaskInstance.dag_id == "airloop_gated_promote", TaskInstance.task_id == "approve",
                        TaskInstance.state == TaskInstanceState.AWAITING_INPUT)).first()
                    if ti is not None:
                        detail = session.scalars(select(HITLDetail).where(HITLDetail.ti_id == ti.id)).one()
                        seen["champion_while_waiting"] = str(registry.get_version(cfg, "champion").version)
                        seen["shown"] = {"subject": detail.subject, "body": detail.body}
                        payload = UpdateHITLDetailPayload(chosen_options=[decision])
                        update_hitl_detail(dag_id=ti.dag_id, dag_run_id=ti.run_id, task_id="approve",
                                           update_hitl_detail_payload=payload, user=Approver(), session=session,
                                           map_index=-1)
                time.sleep(0.5)
            if not seen:
                raise TimeoutError("the approve task never waited for input")
        except BaseException:
            # dag.test would wait forever for an answer that will not come: end the process, say why.
            (tmp / "approver-error.txt").write_text(traceback.format_exc())
            os._exit(3)

    approver = threading.Thread(target=approve, daemon=True)
    approver.start()
    run = runner.run("airloop_gated_promote", conf={"version": versions[1]})
    approver.join(timeout=5)
    shown, champion_while_waiting = seen.get("shown"), seen.get("champion_while_waiting")
    mv = registry.get_version(cfg, "champion")
    print("AIRLOOP_TEST " + json.dumps({
        "versions": versions, "shown": shown, "champion_while_waiting": champion_while_waiting,
        "state": run.state, "tasks": run.tasks, "promoted": run.returns.get("promote"),
        "rejection": run.returns.get("record_rejection"), "champion": str(mv.version),
        "tags": registry._client().get_model_version(cfg.registered_model_name, versions[1]).tags,
        "log": promotions.promotion_log(cfg)}, default=str))
    """
)


def run_with_decision(tmp_path: Path, decision: str) -> dict:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "gated.yaml").write_text(
        'name: gated\nsource: {uri: "file:///nowhere/*.csv"}\ntarget: y\ntask: classification\n'
        "promotion: {approval: required, approval_timeout_hours: 1}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "AIRLOOP"))}
    env.update(
        AIRLOOP_HOME=str(tmp_path / "home"),
        AIRLOOP_PIPELINES_DIR=str(pipelines),
        PYTHONPATH=str(REPO / "plugins"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, decision], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
    )
    marker = [line for line in proc.stdout.splitlines() if line.startswith("AIRLOOP_TEST ")]
    error = tmp_path / "home" / "approver-error.txt"
    assert not error.exists(), error.read_text()
    assert proc.returncode == 0 and marker, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(marker[-1].removeprefix("AIRLOOP_TEST "))


def test_approved_promotion_waits_shows_the_evidence_and_records_the_approver(tmp_path):
    out = run_with_decision(tmp_path, "Approve")
    v1, v2 = out["versions"]
    assert out["champion_while_waiting"] == v1, "champion moved before anyone approved"
    assert out["shown"]["subject"] == f"Promote airloop-gated v{v2} to champion?"
    body = out["shown"]["body"]
    assert "roc_auc" in body and "PASS champion" in body and "/runs/" in body, body
    assert out["state"] == "success", out["tasks"]
    assert out["tasks"]["approve"] == "success" and out["tasks"]["promote"] == "success"
    assert out["champion"] == v2
    promoted = out["promoted"]
    assert promoted["actor"] == "alice" and promoted["previous"] == v1
    assert promoted["approval"]["approved_by"] == "alice" and promoted["approval"]["approved_by_id"] == "u-42"
    assert promoted["approval"]["decision"] == "Approve"
    assert out["tags"]["airloop.approved_by"] == "alice" and out["tags"]["airloop.promoted_by"] == "alice"
    assert [r["event"] for r in out["log"]] == ["promotion", "promotion"]
    assert out["log"][-1]["approval"]["approved_by"] == "alice"


def test_rejected_promotion_keeps_the_champion_and_records_who_rejected(tmp_path):
    out = run_with_decision(tmp_path, "Reject")
    v1, v2 = out["versions"]
    assert out["tasks"]["promote"] == "skipped", out["tasks"]
    assert out["champion"] == v1
    assert out["rejection"]["event"] == "approval_rejected" and out["rejection"]["actor"] == "alice"
    assert out["tags"]["airloop.approval"].startswith("rejected by alice")
    assert "airloop.promoted_by" not in out["tags"]
    assert [r["event"] for r in out["log"]] == ["promotion", "approval_rejected"]
