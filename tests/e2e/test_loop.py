"""The whole loop through Airflow on small data, as a user runs it: `airloop demo`, `airloop run`, `airloop status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
AIRLOOP = [sys.executable, "-m", "airloop.cli"]
pytestmark = pytest.mark.slow


def airloop(args: list[str], home: Path, timeout: int = 900, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "AIRLOOP"))}
    environ.update({"AIRLOOP_HOME": str(home), "PYTHONPATH": str(REPO / "plugins"), **env})
    return subprocess.run([*AIRLOOP, *args], env=environ, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo")
    proc = airloop(["demo", "--days", "7", "--drift-day", "4", "--daily-rows", "700", "--history-rows", "2500"], home)
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    status = airloop(["status", "--json"], home)
    assert status.returncode == 0, status.stderr[-3000:]
    return home, proc.stdout, json.loads(status.stdout)


def test_demo_promotes_a_champion_through_airflow(demo):
    home, out, status = demo
    churn = status["pipelines"]["churn"]
    assert churn["champion"] is not None
    assert churn["champion"]["promoted_by"] == "airloop-gate"
    for stage in ("ingest", "validate", "train", "evaluate", "promote", "score", "monitor"):
        assert churn["dag_runs"][stage] is not None, f"{stage} never ran through Airflow"
    assert churn["dag_runs"]["promote"]["state"] == "success"
    assert status["tracking_uri"].startswith("sqlite:///") and str(home) in status["tracking_uri"]
    assert status["lake_uri"] == (home / "lake").as_uri()


def test_drift_is_detected_within_two_days_and_names_features(demo):
    home, out, status = demo
    verdicts = sorted((home / "lake" / "churn" / "monitoring").glob("date=*/verdict.json"))
    by_day = {p.parent.name[5:]: json.loads(p.read_text()) for p in verdicts}
    before = [v for d, v in by_day.items() if d < "2026-01-04"]
    assert before and all(v["status"] != "alert" for v in before), "alert raised on clean data"
    confirmed = [d for d, v in by_day.items() if v["confirmed"]]
    assert confirmed and confirmed[0] <= "2026-01-05", f"drift confirmed late or never: {confirmed}"
    first_alert = by_day["2026-01-04"]
    assert first_alert["status"] == "alert"
    assert {"monthly_charges", "contract"} & set(first_alert["drifted_features"])
    assert Path(first_alert["report_uri"].removeprefix("file://")).read_text().startswith("<!DOCTYPE html>")
    assert "Drift injected from 2026-01-04" in out and "confirmed 2026-01-05" in out


def test_retrain_decision_is_made_and_explained(demo):
    home, out, status = demo
    retrains = status["pipelines"]["churn"]["retrains"]
    assert retrains and retrains[0]["batch_id"] == "2026-01-05" and retrains[0].get("train_run_id")
    assert "Retrain on 2026-01-05:" in out
    decided = "PROMOTED to champion v2" in out or "REJECTED; champion kept" in out
    assert decided, out[-3000:]
    if "PROMOTED" in out:
        assert status["pipelines"]["churn"]["champion"]["version"] == "2"
    else:
        assert status["pipelines"]["churn"]["champion"]["version"] == "1"


def test_mlflow_holds_lineage_for_the_champion(demo):
    home, _, status = demo
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(status["tracking_uri"])
    run = MlflowClient().get_run(status["pipelines"]["churn"]["champion"]["run_id"])
    tags = run.data.tags
    assert tags["airflow.dag_id"].startswith("airloop_churn_") and tags["airflow.run_id"]
    assert tags["airflow.try_number"] == "1" and tags["airloop.data_fingerprint"]
    assert run.inputs.dataset_inputs, "training data not logged as an MLflow dataset"


def houses_csv(path: Path, n: int = 600, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    sqft = rng.normal(1500, 400, n).clip(300)
    city = rng.choice(["lyon", "lille", "nantes"], n)
    price = 50 * sqft + np.where(city == "lyon", 40_000, 0) + rng.normal(0, 10_000, n)
    pd.DataFrame({"sqft": sqft.round(), "rooms": rng.integers(1, 7, n), "city": city, "price": price.round()}).to_csv(
        path, index=False
    )


def test_second_pipeline_from_four_keys_runs_with_airloop_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    houses_csv(data / "houses.csv")
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "houses.yaml").write_text(
        f'name: houses\nsource: {{uri: "{data.as_uri()}/*.csv"}}\ntarget: price\ntask: regression\n'
    )
    home = tmp_path / "home"
    proc = airloop(["run", "houses"], home, AIRLOOP_PIPELINES_DIR=str(pipelines))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "houses: v1 is champion." in proc.stdout
    status = json.loads(airloop(["status", "--json"], home, AIRLOOP_PIPELINES_DIR=str(pipelines)).stdout)
    assert status["pipelines"]["houses"]["champion"]["version"] == "1"
    assert "test_rmse" in status["pipelines"]["houses"]["champion"]["metrics"]


def test_airloop_run_exits_nonzero_with_the_reason_when_a_stage_refuses(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "houses.csv").write_text("")
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "houses.yaml").write_text(
        f'name: houses\nsource: {{uri: "{data.as_uri()}/*.csv"}}\ntarget: price\ntask: regression\n'
    )
    proc = airloop(["run", "houses"], tmp_path / "home", AIRLOOP_PIPELINES_DIR=str(pipelines))
    assert proc.returncode == 2
    assert "ingest of batch" in proc.stderr and "houses.csv: the file is empty" in proc.stderr
    assert (tmp_path / "home" / "lake" / "houses" / "raw").exists(), "raw bytes were not kept"
