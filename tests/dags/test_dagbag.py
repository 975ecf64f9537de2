"""The DagBag loads every pipeline with zero import errors, cheaply: no DB, no network, no heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = {"ingest", "validate", "train", "evaluate", "promote", "score", "monitor", "retrain"}

PARSE = textwrap.dedent(
    """
    import json, socket, sys, time
    def no_network(*a, **k):
        raise RuntimeError(f"network access while parsing DAGs: {a}")
    socket.socket.connect = no_network
    socket.create_connection = no_network
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    queries = []
    event.listen(Engine, "before_cursor_execute", lambda *a, **k: queries.append(a[2]))
    from airflow.dag_processing.dagbag import DagBag
    t0 = time.monotonic()
    bag = DagBag(dag_folder=sys.argv[1])
    seconds = time.monotonic() - t0
    def empty_form(d, **filled):
        # What the trigger form submits when a person leaves a text field empty: null.
        import copy
        params = copy.deepcopy(d.params)
        try:
            for k in list(params):
                if "string" in (params.get_param(k).schema.get("type") or ()):
                    params[k] = filled.get(k)
            params.validate()
            return None
        except Exception as err:
            return f"{type(err).__name__}: {err}"[:300]
    forms = {d.dag_id: {"empty": empty_form(d), "with_reason": empty_form(d, reason="model regressed")}
             for d in bag.dags.values()}
    heavy = sorted(m for m in ("pandas", "sklearn", "mlflow", "great_expectations", "scipy") if m in sys.modules)
    dags = {d.dag_id: {"tags": sorted(d.tags), "doc": bool(d.doc_md),
                       "retries": [t.retries for t in d.tasks], "params": sorted(d.params.keys()),
                       "tasks": sorted(d.task_ids)} for d in bag.dags.values()}
    print(json.dumps({"errors": {k: v for k, v in bag.import_errors.items()}, "dags": dags, "heavy": heavy,
                      "queries": queries, "seconds": seconds, "forms": forms}))
    """
)


def parse(tmp_path: Path, pipelines_dir: Path) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "af"),
        "AIRLOOP_HOME": str(tmp_path / "home"),
        "AIRLOOP_PIPELINES_DIR": str(pipelines_dir),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/no-such-dir/airflow.db",
        "PYTHONPATH": f"{REPO / 'plugins'}:{REPO / 'dags'}",
    }
    proc = subprocess.run(
        [sys.executable, "-c", PARSE, str(REPO / "dags")], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> dict:
    return parse(tmp_path_factory.mktemp("parse"), REPO / "include" / "pipelines")


def test_zero_import_errors_and_every_stage_per_pipeline(shipped):
    assert shipped["errors"] == {}
    ids = set(shipped["dags"])
    assert {f"airloop_churn_{s}" for s in STAGES} <= ids


def test_every_dag_has_tags_retries_doc_and_params(shipped):
    for dag_id, info in shipped["dags"].items():
        assert "airloop" in info["tags"], dag_id
        assert info["doc"], dag_id
        if not dag_id.startswith("airloop_invalid_"):
            assert all(r >= 1 for r in info["retries"]), dag_id
            assert info["params"], f"{dag_id} has no Params for the UI trigger form"


def test_trigger_forms_accept_their_documented_empty_defaults(shipped):
    forms = shipped["forms"]
    for stage in ("ingest", "validate", "score", "monitor", "train", "retrain", "evaluate", "promote"):
        assert forms[f"airloop_churn_{stage}"]["empty"] is None, (stage, forms[f"airloop_churn_{stage}"])
    # Rollback: an empty to_version (the previous champion) is fine; the reason is required.
    assert forms["airloop_churn_rollback"]["with_reason"] is None, forms["airloop_churn_rollback"]
    assert "reason" in (forms["airloop_churn_rollback"]["empty"] or ""), forms["airloop_churn_rollback"]


def test_parsing_makes_no_db_queries_no_network_and_no_heavy_imports(shipped):
    assert shipped["queries"] == []
    assert shipped["heavy"] == [], "heavy modules imported at parse time"


def test_second_pipeline_from_four_keys_gets_its_own_dags(tmp_path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "churn.yaml").write_text((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    (folder / "houses.yaml").write_text(
        'name: houses\nsource: {uri: "file:///data/h/*.csv"}\ntarget: price\ntask: regression\n'
    )
    out = parse(tmp_path, folder)
    assert out["errors"] == {}
    assert {f"airloop_houses_{s}" for s in STAGES} <= set(out["dags"])


def test_invalid_yaml_shows_up_as_a_dag_explaining_the_error(tmp_path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "broken.yaml").write_text('name: broken\nsource: {uri: "file:///d"}\ntarget: y\ntask: clustering\n')
    (folder / "ok.yaml").write_text('name: fine\nsource: {uri: "file:///d"}\ntarget: y\ntask: regression\n')
    out = parse(tmp_path, folder)
    assert out["errors"] == {}
    assert "airloop_invalid_broken" in out["dags"]
    assert "airloop_fine_train" in out["dags"]
