"""The whole loop through Airflow on small data, as a user runs it: `airloop demo`, `airloop run`, `airloop status`."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.loopkit import run_airloop

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def airloop(args: list[str], home: Path, timeout: int = 900, **env) -> subprocess.CompletedProcess:
    return run_airloop(args, home, timeout=timeout, **env)


def demo_day(n: int) -> str:
    """Day ``n`` (1-based) of the demo's 7 simulated days, which end yesterday."""
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=8 - n)).isoformat()


@pytest.fixture(scope="module")
def demo(demo_state):
    return demo_state


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
    before = [v for d, v in by_day.items() if d < demo_day(4)]
    assert before and all(v["status"] != "alert" for v in before), "alert raised on clean data"
    confirmed = [d for d, v in by_day.items() if v["confirmed"]]
    assert confirmed and confirmed[0] <= demo_day(5), f"drift confirmed late or never: {confirmed}"
    first_alert = by_day[demo_day(4)]
    assert first_alert["status"] == "alert"
    assert {"monthly_charges", "contract"} & set(first_alert["drifted_features"])
    assert Path(first_alert["report_uri"].removeprefix("file://")).read_text().startswith("<!DOCTYPE html>")
    assert f"Drift injected from {demo_day(4)}" in out and f"confirmed {demo_day(5)}" in out


def test_retrain_decision_is_made_and_explained(demo):
    home, out, status = demo
    retrains = status["pipelines"]["churn"]["retrains"]
    assert retrains and retrains[0]["batch_id"] == demo_day(5) and retrains[0].get("train_run_id")
    assert f"Retrain on {demo_day(5)}:" in out
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


def test_event_time_source_over_past_years_trains_a_champion_with_airloop_run(tmp_path):
    """Undated files whose event times lie in past years: one initial history batch, then a champion."""
    data = tmp_path / "data"
    data.mkdir()
    houses_csv(data / "houses.csv", n=600)
    frame = pd.read_csv(data / "houses.csv")
    frame.insert(0, "sold_at", pd.date_range("2023-01-01", "2024-06-30", periods=len(frame)).strftime("%Y-%m-%d"))
    frame.to_csv(data / "houses.csv", index=False)
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "sales.yaml").write_text(
        f'name: sales\nsource: {{uri: "{data.as_uri()}/*.csv"}}\ntarget: price\ntask: regression\n'
        "event_time_column: sold_at\n"
    )
    home = tmp_path / "home"
    proc = airloop(["run", "sales"], home, AIRLOOP_PIPELINES_DIR=str(pipelines))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "2024-06-30 (history)" in proc.stdout and "sales: v1 is champion." in proc.stdout
    staged = pd.read_parquet(home / "lake" / "sales" / "validated" / "date=2024-06-30" / "part-0.parquet")
    assert len(staged) == 600, "the history batch should hold every row up to its day"
