"""Code tests of airloop.data.validate: the GX gate between staged and validated data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fixtures.configs import pipeline_cfg

from airloop.config import PipelineConfig
from airloop.data.suites import SuiteError, load_suite
from airloop.data.validate import (
    BatchQuarantined,
    ValidationOutcome,
    check_scoring_frame,
    validate_batch,
    validate_frame,
)
from airloop.errors import BadInput
from airloop.settings import REPO_ROOT
from airloop.store.lake import BATCH_COLUMN, Lake, exists, list_uris, read_json, read_parquet, write_json, write_parquet

BATCH = "2026-01-05"
pytestmark = pytest.mark.usefixtures("mlflow_store")
CHURN_SUITE_DIR = REPO_ROOT / "include" / "gx"


def make_cfg(name: str = "shop", **extra) -> PipelineConfig:
    return pipeline_cfg("file:///nowhere/data.csv", name=name, **extra)


def small_frame(rows: int = 8) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:06d}" for i in range(rows)],
            "event_time": pd.date_range("2026-01-05", periods=rows, freq="h"),
            "tenure_months": np.arange(rows) % 72,
            "plan": ["basic", "pro"] * (rows // 2),
            "churned": [0, 1] * (rows // 2),
            BATCH_COLUMN: BATCH,
        }
    )


def churn_frame(rows: int = 2000, seed: int = 7) -> pd.DataFrame:
    """A clean-looking batch of the demo churn dataset."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 73, rows)
    monthly = rng.uniform(15, 150, rows).round(2)
    total = (monthly * tenure).round(2)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:06d}" for i in range(rows)],
            "event_time": pd.Timestamp("2026-01-05") + pd.to_timedelta(rng.integers(0, 86400, rows), unit="s"),
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "contract": rng.choice(["month-to-month", "one_year", "two_year"], rows),
            "payment_method": rng.choice(["electronic_check", "mailed_check", "bank_transfer", "credit_card"], rows),
            "internet_service": rng.choice(["dsl", "fiber", "none"], rows),
            "support_calls": rng.integers(0, 16, rows),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "senior": rng.integers(0, 2, rows),
            "churned": rng.integers(0, 2, rows),
        }
    )
    frame.loc[rng.random(rows) < 0.03, "monthly_charges"] = np.nan  # a few % missing, as in the simulator
    frame.loc[rng.random(rows) < 0.02, "total_charges"] = np.nan
    return frame


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake("shop", root=(tmp_path / "lake").as_uri())


@pytest.fixture
def no_suites(tmp_path, monkeypatch):
    """An empty suites folder: every pipeline gets the default suite."""
    folder = tmp_path / "suites"
    folder.mkdir()
    monkeypatch.setenv("AIRLOOP_SUITES_DIR", str(folder))
    return folder


def stage(lake: Lake, frame: pd.DataFrame, batch_id: str = BATCH) -> None:
    """What ingestion leaves behind: the staged Parquet and a manifest."""
    write_parquet(lake.part("staged", batch_id), frame)
    write_json(lake.manifest(batch_id), {"batch_id": batch_id, "rows": len(frame), "source_uri": "file:///x.csv"})


def batch_files(lake: Lake) -> list[str]:
    return [u for zone in ("validated", "quarantine") for u in list_uris(lake.zone(zone))]


# --- validate_batch ----------------------------------------------------------------------------------------


def test_clean_batch_passes_and_lands_in_validated(lake, no_suites):
    cfg = make_cfg()
    stage(lake, small_frame())

    result = validate_batch(cfg, BATCH, lake=lake, run_info={"run_id": "manual__1"})

    assert result["verdict"] == "passed"
    assert result["uri"] == lake.part("validated", BATCH)
    assert result["rows"] == 8 and result["warnings"] == 0
    assert "verdict passed" in result["summary"] and "PASSED" in result["summary"]
    pd.testing.assert_frame_equal(read_parquet(result["uri"]), read_parquet(lake.part("staged", BATCH)))
    assert batch_files(lake) == [lake.part("validated", BATCH)]
    manifest = read_json(lake.manifest(BATCH))
    assert manifest["source_uri"] == "file:///x.csv"  # ingestion's keys are kept
    v = manifest["validation"]
    assert v["verdict"] == "passed" and v["critical"] == [] and v["warnings"] == []
    assert v["suite"] == "shop" and v["run_info"] == {"run_id": "manual__1"} and v["validated_at"]
    # Data Docs were built under the lake's reports for this batch
    assert result["data_docs"] == lake.report("data_docs", BATCH, "index.html")
    assert exists(result["data_docs"])
    assert v["data_docs"] == result["data_docs"]


def test_all_null_critical_column_is_quarantined_with_every_row(lake, no_suites):
    cfg = make_cfg()
    frame = small_frame()
    frame["customer_id"] = None
    stage(lake, frame)

    with pytest.raises(BatchQuarantined) as caught:
        validate_batch(cfg, BATCH, lake=lake)

    message = str(caught.value)
    assert BATCH in message and "'shop'" in message
    assert "expect_column_values_to_not_be_null on column 'customer_id': 100% of rows failing" in message
    assert lake.part("quarantine", BATCH) in message and "index.html" in message
    kept = read_parquet(lake.part("quarantine", BATCH))
    assert len(kept) == len(frame) and kept[BATCH_COLUMN].eq(BATCH).all()
    assert kept["tenure_months"].tolist() == frame["tenure_months"].tolist()
    assert not exists(lake.part("validated", BATCH))
    v = read_json(lake.manifest(BATCH))["validation"]
    assert v["verdict"] == "quarantined"
    assert v["critical"] == [
        {
            "expectation": "expect_column_values_to_not_be_null",
            "column": "customer_id",
            "unexpected_percent": 100.0,
            "details": "8 of 8 rows",
        }
    ]
    assert caught.value.result["verdict"] == "quarantined"
    assert isinstance(caught.value, BadInput) and isinstance(caught.value, ValueError)  # fail, do not retry


def test_warning_only_failure_passes_and_is_recorded(lake, no_suites):
    cfg = make_cfg()  # no labels feed: the target is expected inline, but its absence only warns
    stage(lake, small_frame().drop(columns=["churned"]))

    result = validate_batch(cfg, BATCH, lake=lake)

    assert result["verdict"] == "passed_with_warnings" and result["warnings"] == 1
    assert exists(lake.part("validated", BATCH))
    v = read_json(lake.manifest(BATCH))["validation"]
    assert v["verdict"] == "passed_with_warnings" and v["critical"] == []
    assert [(w["expectation"], w["column"]) for w in v["warnings"]] == [("expect_column_to_exist", "churned")]


def test_missing_declared_feature_is_quarantined(lake, no_suites):
    cfg = make_cfg(features=["tenure_months", "plan"])
    stage(lake, small_frame().drop(columns=["plan"]))

    with pytest.raises(BatchQuarantined, match=r"expect_column_to_exist on column 'plan': column not in the batch"):
        validate_batch(cfg, BATCH, lake=lake)
    assert exists(lake.part("quarantine", BATCH))


def test_empty_batch_is_quarantined(lake, no_suites):
    cfg = make_cfg()
    stage(lake, small_frame().iloc[:0])

    with pytest.raises(BatchQuarantined, match=r"expect_table_row_count_to_be_between: observed 0"):
        validate_batch(cfg, BATCH, lake=lake)
    assert len(read_parquet(lake.part("quarantine", BATCH))) == 0
    assert not exists(lake.part("validated", BATCH))


def test_rerun_replaces_output_in_both_directions(lake, no_suites):
    cfg = make_cfg()
    stage(lake, small_frame())
    validate_batch(cfg, BATCH, lake=lake)
    assert batch_files(lake) == [lake.part("validated", BATCH)]

    bad = small_frame()
    bad["customer_id"] = None
    stage(lake, bad)  # a replay of the same batch, now broken
    with pytest.raises(BatchQuarantined):
        validate_batch(cfg, BATCH, lake=lake)
    assert batch_files(lake) == [lake.part("quarantine", BATCH)]

    stage(lake, small_frame())  # fixed upstream and replayed again
    assert validate_batch(cfg, BATCH, lake=lake)["verdict"] == "passed"
    assert batch_files(lake) == [lake.part("validated", BATCH)]
    assert read_json(lake.manifest(BATCH))["validation"]["verdict"] == "passed"


# --- suites ------------------------------------------------------------------------------------------------


def test_default_suite_from_config(no_suites):
    columns = ["customer_id", "event_time", "tenure_months", "plan", "churned", BATCH_COLUMN]

    suite = load_suite(make_cfg(), columns)

    got = {(e["type"], e["kwargs"].get("column"), e["meta"]["severity"]) for e in suite["expectations"]}
    assert got == {
        ("expect_column_to_exist", "churned", "warning"),
        ("expect_column_to_exist", "customer_id", "critical"),
        ("expect_column_values_to_not_be_null", "customer_id", "critical"),
        ("expect_column_to_exist", "event_time", "critical"),
        ("expect_column_to_exist", "tenure_months", "critical"),
        ("expect_column_to_exist", "plan", "critical"),
        ("expect_table_row_count_to_be_between", None, "critical"),
    }
    assert suite["name"] == "shop"
    json.dumps(suite)  # JSON-able

    # With a labels feed the target arrives later: no expectation on it at all.
    with_labels = load_suite(make_cfg(labels={"uri": "file:///labels.csv"}), columns)
    assert all(e["kwargs"].get("column") != "churned" for e in with_labels["expectations"])


def test_malformed_suite_json_names_the_file(no_suites):
    path = no_suites / "shop.json"
    path.write_text('{"name": "shop", "expectations": [', encoding="utf-8")

    with pytest.raises(SuiteError, match="not valid JSON") as caught:
        load_suite(make_cfg(), ["customer_id"])
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("expectation", "found"),
    [
        ({"type": "expect_column_to_be_lovely", "kwargs": {"column": "plan"}}, "not a valid expectation"),
        ({"type": "expect_column_to_exist", "kwargs": {}}, "not a valid expectation"),
        ({"expectation_type": "expect_column_to_exist", "kwargs": {"column": "plan"}}, "GX 0.x format"),
        (
            {"type": "expect_column_to_exist", "kwargs": {"column": "plan"}, "meta": {"severity": "fatal"}},
            "fatal",
        ),
        ({"type": "expect_column_to_exist", "kwargs": {"column": BATCH_COLUMN}}, "bookkeeping"),
    ],
)
def test_invalid_expectation_names_the_file_and_expectation(no_suites, expectation, found):
    path = no_suites / "shop.json"
    path.write_text(json.dumps({"name": "shop", "expectations": [expectation]}), encoding="utf-8")

    with pytest.raises(SuiteError, match=found) as caught:
        load_suite(make_cfg(), ["plan"])
    assert f"{path}: expectation #0" in str(caught.value)


def test_reviewed_suite_file_wins_over_default(lake, no_suites):
    suite = {
        "name": "shop",
        "expectations": [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "tenure_months", "max_value": 3},
            },
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": "plan", "value_set": ["basic"]},
                "meta": {"severity": "warning"},
            },
        ],
    }
    (no_suites / "shop.json").write_text(json.dumps(suite), encoding="utf-8")
    frame = small_frame()
    frame.loc[1, "plan"] = None  # 3 of 8 rows are 'pro': 37.5% of all rows (GX's own percent skips nulls)
    stage(lake, frame)

    with pytest.raises(BatchQuarantined, match=r"'tenure_months': 50% of rows failing \(4 of 8 rows"):
        validate_batch(make_cfg(), BATCH, lake=lake)
    v = read_json(lake.manifest(BATCH))["validation"]
    assert v["suite_file"] == str(no_suites / "shop.json")
    assert v["warnings"] == [
        {
            "expectation": "expect_column_values_to_be_in_set",
            "column": "plan",
            "unexpected_percent": 37.5,
            "details": "3 of 8 rows, e.g. 'pro'",
        }
    ]


# --- validate_frame and the churn suite --------------------------------------------------------------------


@pytest.fixture
def churn_suite(monkeypatch) -> dict:
    monkeypatch.setenv("AIRLOOP_SUITES_DIR", str(CHURN_SUITE_DIR))
    return load_suite(make_cfg("churn"), list(churn_frame(10).columns))


def test_churn_suite_passes_on_clean_data(churn_suite):
    assert churn_suite["name"] == "churn"

    outcome = validate_frame(churn_frame(), churn_suite, batch_id=BATCH)

    assert outcome.success, outcome.summary()
    assert outcome.critical == [] and outcome.warnings == []
    assert outcome.evaluated == len(churn_suite["expectations"]) == 22
    assert outcome.data_docs is None


def test_churn_suite_catches_unseen_category_and_missing_charges(churn_suite, tmp_path):
    frame = churn_frame()
    frame.loc[frame.index[:100], "region"] = "central"  # 5% of rows in a region the model never saw
    frame.loc[frame.index[:700], "monthly_charges"] = np.nan  # 35% missing: a warning only
    frame[BATCH_COLUMN] = BATCH  # bookkeeping is never shown to GX

    outcome = validate_frame(frame, churn_suite, docs_dir=str(tmp_path / "docs"), batch_id=BATCH)

    assert not outcome.success
    assert [(f["expectation"], f["column"], f["unexpected_percent"]) for f in outcome.critical] == [
        ("expect_column_values_to_be_in_set", "region", 5.0)
    ]
    assert outcome.critical[0]["details"] == "100 of 2000 rows, e.g. 'central'"
    missing_pct = round(frame["monthly_charges"].isna().mean() * 100, 3)  # ours plus the base few %
    assert missing_pct > 35
    assert [(f["column"], f["unexpected_percent"]) for f in outcome.warnings] == [("monthly_charges", missing_pct)]
    summary = outcome.summary()
    assert "CRITICAL expect_column_values_to_be_in_set on column 'region': 5% of rows failing" in summary
    assert f"WARNING expect_column_values_to_not_be_null on column 'monthly_charges': {missing_pct:.3g}%" in summary
    assert outcome.data_docs == str(tmp_path / "docs" / "index.html")
    assert "churn" in (tmp_path / "docs" / "index.html").read_text(encoding="utf-8")
    assert json.loads(json.dumps(outcome.to_dict()))["verdict"] == "failed"


def test_validate_frame_reports_partial_nulls_as_share_of_rows():
    frame = small_frame()
    frame.loc[frame.index[:1], "tenure_months"] = np.nan
    suite = {
        "name": "s",
        "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "tenure_months"}}],
    }

    outcome = validate_frame(frame, suite)

    assert isinstance(outcome, ValidationOutcome) and not outcome.success and outcome.evaluated == 1
    assert (
        "CRITICAL expect_column_values_to_not_be_null on column 'tenure_months': 12.5% of rows failing"
        in outcome.summary()
    )


def test_scoring_check_ignores_the_target_but_catches_skew(no_suites):
    cfg = make_cfg()
    scoring = small_frame().drop(columns=["churned", BATCH_COLUMN])

    # No label at scoring time: not even a warning about the target.
    assert check_scoring_frame(cfg, scoring).verdict == "passed"

    outcome = check_scoring_frame(make_cfg(features=["tenure_months", "plan"]), scoring.drop(columns=["plan"]))
    assert not outcome.success
    assert [(f["expectation"], f["column"]) for f in outcome.critical] == [("expect_column_to_exist", "plan")]


# --- replay and the MLflow record --------------------------------------------------------------------------


def test_replay_after_the_suite_is_fixed_moves_the_batch_to_validated(lake, no_suites):
    from airloop.data.validate import NotQuarantined

    suite = {
        "name": "shop",
        "expectations": [
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "plan", "value_set": ["basic"]}}
        ],
    }
    (no_suites / "shop.json").write_text(json.dumps(suite), encoding="utf-8")
    stage(lake, small_frame())
    with pytest.raises(NotQuarantined, match=r"replay of batch 2026-01-05 .* neither validated nor quarantined"):
        validate_batch(make_cfg(), BATCH, lake=lake, replay=True)
    with pytest.raises(BatchQuarantined, match=r"column 'plan': 50% of rows failing \(4 of 8 rows, e\.g\. 'pro'\)"):
        validate_batch(make_cfg(), BATCH, lake=lake)

    suite["expectations"][0]["kwargs"]["value_set"] = ["basic", "pro"]  # the reviewed fix: 'pro' is a real plan
    (no_suites / "shop.json").write_text(json.dumps(suite), encoding="utf-8")
    result = validate_batch(make_cfg(), BATCH, lake=lake, replay=True)

    assert result["verdict"] == "passed" and result["replayed"] and result["summary"].startswith("Replay: ")
    assert batch_files(lake) == [lake.part("validated", BATCH)]
    manifest = read_json(lake.manifest(BATCH))
    assert manifest["validation"]["verdict"] == "passed" and manifest["validation"]["replay"] is True
    assert [v["verdict"] for v in manifest["validation_history"]] == ["quarantined"]  # the first verdict stays
    with pytest.raises(NotQuarantined, match="the batch is validated"):
        validate_batch(make_cfg(), BATCH, lake=lake, replay=True)


def test_each_validation_is_recorded_in_mlflow_with_its_warnings(lake, no_suites):
    from mlflow.tracking import MlflowClient

    stage(lake, small_frame().drop(columns=["churned"]))  # the target's absence is a warning

    validate_batch(make_cfg(), BATCH, lake=lake, run_info={"dag_id": "airloop_shop_validate", "run_id": "r1"})

    run_id = read_json(lake.manifest(BATCH))["validation"]["mlflow_run_id"]
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["airloop.verdict"] == "passed_with_warnings"
    assert run.data.tags["airloop.batch_id"] == BATCH and run.data.tags["airflow.dag_id"] == "airloop_shop_validate"
    assert (
        run.data.tags["airloop.warning.0"]
        == "WARNING expect_column_to_exist on column 'churned': column not in the batch"
    )
    assert run.data.metrics["warnings"] == 1 and run.data.metrics["rows"] == 8
    assert run.data.metrics["critical_failures"] == 0
    assert run.info.run_name == f"validate {BATCH}" and run.info.status == "FINISHED"


def test_scoring_check_with_a_suggested_suite_accepts_one_row_but_catches_an_unseen_category(monkeypatch):
    from fixtures import DATA

    monkeypatch.setenv("AIRLOOP_SUITES_DIR", str(DATA))  # tests/fixtures/data/suite.json, "suite"
    cfg = make_cfg("suite")
    row = pd.read_csv(DATA / "good.csv").drop(columns=["churned"]).head(1)

    assert check_scoring_frame(cfg, row).success  # the batch's row-count bounds do not apply to a request

    outcome = check_scoring_frame(cfg, row.assign(region="central"))
    assert [(f["expectation"], f["column"]) for f in outcome.critical] == [
        ("expect_column_values_to_be_in_set", "region")
    ]
