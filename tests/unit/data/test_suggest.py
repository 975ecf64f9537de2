"""airloop suggest-suite: a reviewed-quality first suite from reference data (tests/fixtures/data/reference.csv)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fixtures import DATA
from fixtures.configs import pipeline_cfg

from airloop.data.suggest import SuggestError, suggest_suite, write_suite
from airloop.data.suites import CRITICAL, WARNING, load_suite
from airloop.data.validate import validate_frame


def shop_cfg(**extra):
    return pipeline_cfg(name="shop", **extra)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.read_csv(DATA / "reference.csv")


@pytest.fixture(scope="module")
def suite(reference) -> dict:
    return suggest_suite(shop_cfg(), reference)


def find(suite: dict, type_: str, column: str | None = None, severity: str | None = None) -> list[dict]:
    return [
        e
        for e in suite["expectations"]
        if e["type"] == type_
        and (column is None or e["kwargs"].get("column") == column)
        and (severity is None or e["meta"]["severity"] == severity)
    ]


def test_suggested_suite_covers_types_nulls_ranges_domains_rows_and_ids(suite, reference):
    (columns,) = find(suite, "expect_table_columns_to_match_set")
    assert set(columns["kwargs"]["column_set"]) == set(reference.columns) and columns["kwargs"]["exact_match"]
    (types,) = find(suite, "expect_column_values_to_be_in_type_list", "tenure_months")
    assert "int64" in types["kwargs"]["type_list"] and "str" not in types["kwargs"]["type_list"]
    (nulls,) = find(suite, "expect_column_values_to_not_be_null", "monthly_charges")
    assert nulls["kwargs"]["mostly"] == 0.95 and nulls["meta"]["severity"] == CRITICAL
    # Ranges: the reference's [0, 72] widened by 10% of the spread, integer bounds, never below 0.
    (hard,) = find(suite, "expect_column_values_to_be_between", "tenure_months", CRITICAL)
    (soft,) = find(suite, "expect_column_values_to_be_between", "tenure_months", WARNING)
    assert reference["tenure_months"].agg(["min", "max"]).tolist() == [0, 72]
    assert (hard["kwargs"]["min_value"], hard["kwargs"]["max_value"], hard["kwargs"]["mostly"]) == (0, 80, 0.99)
    assert "mostly" not in soft["kwargs"]
    (domain,) = find(suite, "expect_column_values_to_be_in_set", "region", CRITICAL)
    assert domain["kwargs"]["value_set"] == ["east", "north", "south", "west"]
    assert not find(suite, "expect_column_values_to_be_in_set", "customer_id")  # ids are not categories
    assert find(suite, "expect_column_values_to_be_unique", "customer_id", CRITICAL)
    (rows,) = find(suite, "expect_table_row_count_to_be_between")
    assert (rows["kwargs"]["min_value"], rows["kwargs"]["max_value"]) == (30, 3000)
    (target,) = find(suite, "expect_column_to_exist", "churned")
    assert target["meta"]["severity"] == WARNING
    assert all(e["meta"].get("notes") for e in suite["expectations"])  # each says what it came from


def test_reference_passes_its_own_suite_and_the_committed_corpus_suite_is_current(suite, reference):
    outcome = validate_frame(reference, suite)
    assert outcome.success and outcome.warnings == [], outcome.summary()
    committed = json.loads((DATA / "suite.json").read_text())
    assert committed["expectations"] == suite["expectations"], "regenerate tests/fixtures/data/suite.json"


def test_with_a_labels_feed_the_target_may_be_absent_but_extra_columns_are_not(reference):
    suite = suggest_suite(shop_cfg(labels={"uri": "file:///labels/*.csv"}), reference)
    assert not find(suite, "expect_table_columns_to_match_set")
    (count,) = find(suite, "expect_table_column_count_to_be_between")
    assert (count["kwargs"]["min_value"], count["kwargs"]["max_value"]) == (6, 7)
    assert validate_frame(reference.drop(columns=["churned"]), suite).success
    extra = validate_frame(reference.assign(coupon="x"), suite)
    assert [f["expectation"] for f in extra.critical] == ["expect_table_column_count_to_be_between"]


def test_empty_reference_is_refused():
    with pytest.raises(SuggestError, match="reference data has no rows"):
        suggest_suite(shop_cfg(), pd.DataFrame({"a": []}))


def test_cli_writes_a_suite_that_loads_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    from airloop.cli import main

    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "shop.yaml").write_text(
        "name: shop\nsource: {uri: 'file:///x/*.csv'}\ntarget: churned\ntask: classification\n"
        "id_column: customer_id\nevent_time_column: event_time\n"
    )
    monkeypatch.setenv("AIRLOOP_PIPELINES_DIR", str(pipelines))
    monkeypatch.setenv("AIRLOOP_SUITES_DIR", str(tmp_path / "gx"))

    assert main(["suggest-suite", "shop", "--from", str(DATA / "reference.csv")]) == 0
    out = capsys.readouterr().out
    assert f"Wrote {tmp_path / 'gx' / 'shop.json'}: 26 expectations (21 critical, 5 warning) from 300" in out
    assert len(load_suite(shop_cfg(), ["customer_id"])["expectations"]) == 26
    assert main(["suggest-suite", "shop", "--from", str(DATA / "reference.csv")]) == 2
    assert "a suite exists already; expected --force" in capsys.readouterr().err
    with pytest.raises(SuggestError, match="expected --force"):
        write_suite(shop_cfg(), {}, tmp_path / "gx" / "shop.json")
