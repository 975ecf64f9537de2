"""airloop.monitoring.trace: from a served (and a batch-scored) prediction back to the model, its run, its data batches
with their fingerprints and validation reports, the git sha, the DAG runs and the promotion record."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fixtures.servekit import CHURN_ROW, RunningServer, churn_cfg, ingest_validated, simulate_small, train_version

ROW = CHURN_ROW


@pytest.fixture(scope="module")
def chain(mlflow_store, tmp_path_factory):
    data = tmp_path_factory.mktemp("trace_data")
    written = simulate_small(data, days=1)
    cfg = churn_cfg("trc", data)
    history = written["history_day"]
    ingest_validated(cfg, history, run_info={"dag_id": "airloop_trc_ingest", "run_id": f"manual__{history}"})
    v1 = train_version(cfg, history, actor="ana@example.com")
    return {"cfg": cfg, "v1": v1, "history": history, "data": data, "written": written}


def check_chain(doc, ctx):
    from airloop.store import tracking

    cfg, history = ctx["cfg"], ctx["history"]
    assert (doc["model"]["name"], doc["model"]["version"]) == ("airloop-trc", ctx["v1"]["version"])
    assert doc["training_run"]["run_id"] == ctx["v1"]["run_id"]
    assert doc["training_run"]["candidate"] == "logistic_regression"
    assert doc["promotion"]["promoted_by"] == "ana@example.com" and doc["promotion"]["reason"] == "test"
    assert doc["code"]["git_sha"] == tracking.code_version()["git_sha"]
    batch = next(b for b in doc["training_batches"] if b["batch_id"] == history)
    source = Path(ctx["data"]) / "landing" / f"churn_{history}.csv"
    assert batch["sources"][0]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert batch["validation"]["verdict"] in ("passed", "passed_with_warnings")
    assert batch["validation"]["suite"] == cfg.name
    assert batch["manifest_uri"].endswith(f"manifests/{history}.json")
    roles = {r["role"]: r for r in doc["dag_runs"]}
    assert roles["train"]["dag_id"] == "airloop_trc_train"
    assert roles[f"ingest {history}"]["run_id"] == f"manual__{history}"


def test_trace_a_served_prediction_back_to_its_data(chain):
    from airloop.monitoring import trace
    from airloop.serving.app import create_app

    with RunningServer(create_app(chain["cfg"])) as url:
        pid = httpx.post(f"{url}/invocations", json={"instances": [ROW]}).json()["prediction_ids"][0]
    doc = trace.trace(pid, chain["cfg"], top=20)
    assert doc["prediction"]["prediction_id"] == pid and doc["scored_batch"] is None
    assert doc["prediction"]["model_run_id"] == chain["v1"]["run_id"]
    check_chain(doc, chain)
    text = trace.render(doc)
    assert pid in text and "ana@example.com" in text and chain["history"] in text

    # the SHAP contributions of this very prediction, against the version that served it: they add up to its
    # log-odds, and the served feature values are shown
    from airloop.store import models

    got = doc["explanation"]
    assert got["explainer"] == "linear" and len(got["contributions"]) == len(ROW), got
    model = models.load_version(chain["cfg"], chain["v1"]["version"])
    margin = model.decision_function(pd.DataFrame([ROW]).astype({"monthly_charges": float}))[0]
    total = got["expected_value"] + sum(c["contribution"] for c in got["contributions"])
    assert total == pytest.approx(margin, abs=1e-6)
    assert {c["feature"]: c["value"] for c in got["contributions"]} == ROW
    assert "top contributions" in text and "contract" in text
    assert trace.trace(pid, chain["cfg"], explain=False)["explanation"] is None


def test_trace_a_batch_scored_prediction_names_the_scoring_run_and_its_batch(chain):
    from airloop.monitoring import trace
    from airloop.serving.score import score_batch

    day = chain["written"]["days"][0]
    ingest_validated(chain["cfg"], day, run_info={"dag_id": "airloop_trc_validate", "run_id": f"manual__{day}"})
    score_batch(chain["cfg"], day, run_info={"dag_id": "airloop_trc_score", "run_id": "scheduled__x"})
    doc = trace.trace(f"trc:{day}:C0000600", chain["cfg"])
    assert doc["prediction"]["customer_id"] == "C0000600"
    assert doc["scored_batch"]["batch_id"] == day and doc["scored_batch"]["sources"]
    assert {"role": "score", "dag_id": "airloop_trc_score", "run_id": "scheduled__x"} in doc["dag_runs"]
    check_chain(doc, chain)
    # explained from the row of the validated batch this prediction id points at
    from airloop.store.lake import Lake

    batch = Lake(chain["cfg"].name).read_zone("validated", [day]).set_index("customer_id").loc["C0000600"]
    contributions = doc["explanation"]["contributions"]
    assert len(contributions) == 5 and "error" not in doc["explanation"]
    for c in contributions:
        want = batch[c["feature"]]
        assert c["value"] == (None if pd.isna(want) else pytest.approx(want) if not isinstance(want, str) else want)


def test_bad_and_unknown_prediction_ids(chain):
    from airloop.monitoring import trace

    with pytest.raises(trace.TraceError, match="expected PIPELINE:BATCH:ID"):
        trace.trace("no-colons", chain["cfg"])
    with pytest.raises(trace.TraceError, match="should be a batch date"):
        trace.trace("trc:yesterday:1", chain["cfg"])
    with pytest.raises(trace.PredictionNotFound, match="not in the predictions of batch 2031-01-01"):
        trace.trace("trc:2031-01-01:C1", chain["cfg"])
