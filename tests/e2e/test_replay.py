"""A corrupted batch is quarantined with a readable reason, replayed after the fix, and the loop continues;
the champion is untouched throughout. Through Airflow, as a user runs it."""

from __future__ import annotations

import json
import shutil

import pytest
from fixtures import DATA
from test_loop import airloop

pytestmark = pytest.mark.slow


def test_quarantine_then_replay_after_the_suite_is_fixed(tmp_path):
    landing, pipelines, suites, home = (tmp_path / d for d in ("landing", "pipelines", "gx", "home"))
    for folder in (landing, pipelines, suites):
        folder.mkdir()
    shutil.copy(DATA / "reference.csv", landing / "shop_2026-01-01.csv")
    shutil.copy(DATA / "suite.json", suites / "shop.json")
    (pipelines / "shop.yaml").write_text(
        f"name: shop\nsource: {{uri: '{landing.as_uri()}/shop_*.csv'}}\ntarget: churned\ntask: classification\n"
        "id_column: customer_id\nevent_time_column: event_time\n"
        "training: {n_iter: 1, cv_folds: 2, candidates: [{name: lr, estimator: logistic_regression}]}\n"
        "evaluation: {baseline: false}\n"  # the corpus has no signal by design; this test is about quarantine
    )
    env = {"AIRLOOP_PIPELINES_DIR": str(pipelines), "AIRLOOP_SUITES_DIR": str(suites)}

    # The feasibility study says no-go on this signal-free corpus and stops the first promotion ...
    refused = airloop(["run", "shop", "--batch", "2026-01-01"], home, **env)
    assert refused.returncode == 3 and "No-go for shop" in refused.stdout, refused.stdout[-3000:]
    # ... until a person overrides it, with a reason.
    forced = airloop(["feasibility", "shop", "--force", "--reason", "replay test corpus"], home, **env)
    assert forced.returncode == 0, f"{forced.stdout[-2000:]}\n{forced.stderr[-2000:]}"
    first = airloop(["run", "shop", "--batch", "2026-01-01"], home, **env)
    assert first.returncode == 0, f"{first.stdout[-3000:]}\n{first.stderr[-3000:]}"
    assert "shop: v1 is champion." in first.stdout

    # A batch with a region the suite has never seen: quarantined, with the reason, and the champion stays.
    shutil.copy(DATA / "unseen_category.csv", landing / "shop_2026-01-05.csv")
    bad = airloop(["run", "shop", "--batch", "2026-01-05"], home, **env)
    assert bad.returncode == 2
    assert "validate of batch 2026-01-05 refused: validate: BatchQuarantined: batch 2026-01-05" in bad.stderr
    assert (
        "CRITICAL expect_column_values_to_be_in_set on column 'region': 10% of rows failing "
        "(6 of 60 rows, e.g. 'central')" in bad.stderr
    )
    lake = home / "lake" / "shop"
    assert (lake / "quarantine" / "date=2026-01-05" / "part-0.parquet").exists()
    assert (lake / "raw" / "date=2026-01-05" / "shop_2026-01-05.csv").read_bytes() == (
        DATA / "unseen_category.csv"
    ).read_bytes()

    def champion() -> str:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
        return str(client.get_model_version_by_alias("airloop-shop", "champion").version)

    assert champion() == "1"

    # The suite is fixed (a person decides 'central' is a real new region) and the batch is replayed.
    suite = json.loads((suites / "shop.json").read_text())
    for exp in suite["expectations"]:
        if exp["type"] == "expect_column_values_to_be_in_set" and exp["kwargs"]["column"] == "region":
            exp["kwargs"]["value_set"].append("central")
    (suites / "shop.json").write_text(json.dumps(suite))
    replay = airloop(["replay", "shop", "2026-01-05"], home, **env)
    assert replay.returncode == 0, f"{replay.stdout[-3000:]}\n{replay.stderr[-3000:]}"
    assert "batch 2026-01-05 passed on replay and flowed on" in replay.stdout and "score: scored" in replay.stdout

    assert not (lake / "quarantine" / "date=2026-01-05" / "part-0.parquet").exists()
    assert (lake / "validated" / "date=2026-01-05" / "part-0.parquet").exists()
    assert (lake / "predictions" / "date=2026-01-05").exists(), "the replayed batch was not scored"
    manifest = json.loads((lake / "manifests" / "2026-01-05.json").read_text())
    assert manifest["validation"]["verdict"] == "passed" and manifest["validation"]["replay"] is True
    assert manifest["validation"]["run_info"]["dag_id"] == "airloop_shop_validate"
    assert [v["verdict"] for v in manifest["validation_history"]] == ["quarantined"]
    assert champion() == "1"  # the first model stays champion: replay does not retrain
