"""The model DAGs' wiring: one mapped task per candidate, the approval path, the rollback DAG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SHAPE = textwrap.dedent(
    """
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.standard.operators.hitl import ApprovalOperator
    bag = DagBag(dag_folder=sys.argv[1])
    out = {"errors": {k: v for k, v in bag.import_errors.items()}, "dags": {}}
    for dag in bag.dags.values():
        out["dags"][dag.dag_id] = {
            "params": sorted(dag.params.keys()),
            "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "mapped": bool(t.is_mapped),
                                  "approval": isinstance(t, ApprovalOperator), "trigger_rule": t.trigger_rule.value,
                                  "timeout_h": (t.response_timeout.total_seconds() / 3600
                                                if getattr(t, "response_timeout", None) else None)}
                      for t in dag.tasks}}
    print(json.dumps(out))
    """
)


def test_candidates_are_mapped_approval_waits_before_promote_and_rollback_exists(tmp_path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "churn.yaml").write_text((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    (folder / "gated.yaml").write_text(
        'name: gated\nsource: {uri: "file:///d/*.csv"}\ntarget: y\ntask: classification\n'
        "promotion: {approval: required, approval_timeout_hours: 6}\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "af"),
        "AIRLOOP_HOME": str(tmp_path / "home"),
        "AIRLOOP_PIPELINES_DIR": str(folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "PYTHONPATH": str(REPO / "plugins"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SHAPE, str(REPO / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == {}
    dags = out["dags"]
    for kind in ("train", "retrain"):
        tasks = dags[f"airloop_churn_{kind}"]["tasks"]
        assert tasks["train_candidate"]["mapped"], "each candidate must be its own mapped task"
        # the plan and the split are one task, and the candidates are named at parse time (no task boundary)
        assert set(tasks) == {"prepare", "train_candidate", "select_best"}
        assert tasks["train_candidate"]["upstream"] == ["prepare"]
        assert tasks["select_best"]["upstream"] == ["prepare", "train_candidate"]

    assert set(dags["airloop_churn_promote"]["tasks"]) == {"promote"}  # approval: none
    gated = dags["airloop_gated_promote"]["tasks"]
    assert set(gated) == {"evidence", "approve", "promote", "record_rejection"}
    assert gated["approve"]["approval"] and gated["approve"]["upstream"] == ["evidence"]
    assert gated["approve"]["timeout_h"] == 6
    assert gated["promote"]["upstream"] == ["approve"]
    assert gated["record_rejection"]["upstream"] == ["promote"]
    assert gated["record_rejection"]["trigger_rule"] == "all_done"

    for name in ("churn", "gated"):
        rollback = dags[f"airloop_{name}_rollback"]
        assert set(rollback["tasks"]) == {"rollback"} and rollback["params"] == ["reason", "to_version"]
