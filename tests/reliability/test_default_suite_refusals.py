"""Defect 11 (and the duplicated header): with no suite file, data the default suite used to let through is
refused on the first batch with a message naming the column, the share, the top offending values and how to
declare the intent; every row is kept (raw bytes by sha256, all rows in quarantine)."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from airloop.store import lake as lk
from airloop.store.lake import Lake

DAY = "2026-01-05"


def _frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "event_time": pd.date_range(DAY, periods=n, freq="1min").strftime("%Y-%m-%d %H:%M:%S"),
            "tenure_months": rng.integers(1, 70, n),
            "monthly_charges": rng.normal(70, 20, n).round(2),
            "contract": rng.choice(["one_year", "two_year", "monthly"], n),
            "churned": rng.integers(0, 2, n),
        }
    )


def _sentinels(values: list[str]):
    def make() -> bytes:
        frame = _frame()
        charges = frame["monthly_charges"].astype(str)
        for i, v in enumerate(values * 3):
            charges.iloc[i * 5] = v
        frame["monthly_charges"] = charges
        return frame.to_csv(index=False).encode()

    return make


def _constant_target() -> bytes:
    return _frame().assign(churned=0).to_csv(index=False).encode()


def _duplicated_header() -> bytes:
    text = _frame().to_csv(index=False)
    header, rest = text.split("\n", 1)
    return (header.replace("contract", "tenure_months") + "\n" + rest).encode()


CASES = [
    (
        "duplicated_header",
        _duplicated_header,
        "ingest",
        r"duplicated header: 'tenure_months' at columns \[3, 5\].*source\.options",
    ),
    (
        "sentinel_unknown",
        _sentinels(["unknown"]),
        "validate",
        r"column 'monthly_charges'.*95\.0% of its values are numbers, 5\.0% text \(top: 'unknown' x3\)"
        r".*na_values: \['unknown'\].*categorical_features",
    ),
    (
        "sentinels_mixed",
        _sentinels(["?", "unknown", "n/a"]),
        "validate",
        r"column 'monthly_charges'.*89\.5% of its values are numbers.*'\?' x3.*na_values: \['\?', 'unknown'\]",
    ),
    (
        "constant_target",
        _constant_target,
        "validate",
        r"column 'churned'.*single value in 100% of 60 labelled rows \(top: '0' x60\)",
    ),
]


@pytest.fixture
def shop(tmp_path, monkeypatch, pipeline_cfg):
    """The `shop` pipeline with NO suite file (the default suite) and a private lake."""
    suites = tmp_path / "suites"
    suites.mkdir()
    monkeypatch.setenv("AIRLOOP_SUITES_DIR", str(suites))
    landing = tmp_path / "landing"
    landing.mkdir()
    return (
        pipeline_cfg(f"{landing.as_uri()}/shop_*", name="shop"),
        landing,
        Lake("shop", root=(tmp_path / "lake").as_uri()),
    )


# The streamed (large-file) path matters for the header, which it reads itself; the rest is validated alike.
RUNS = [(*c, "small") for c in CASES] + [(*CASES[0], "streamed")]


@pytest.mark.parametrize(("case", "make", "stage", "message", "size"), RUNS, ids=[f"{r[0]}-{r[4]}" for r in RUNS])
def test_the_default_suite_refuses_with_a_clear_message_and_keeps_every_row(
    shop, monkeypatch, case, make, stage, message, size
):
    import airloop.data.ingest as ingest
    from airloop.data.validate import validate_batch
    from airloop.errors import BadInput

    if size == "streamed":
        monkeypatch.setattr(ingest, "SMALL_BATCH_BYTES", 0)
    cfg, landing, lake = shop
    data = make()
    (landing / f"shop_{DAY}.csv").write_bytes(data)
    refused_at, err = "ingest", None
    try:
        ingest.ingest_batch(cfg, DAY, lake=lake)
        refused_at = "validate"
        validate_batch(cfg, DAY, lake=lake, track=False)
        refused_at = "passed"
    except BadInput as e:
        err = e
    assert refused_at == stage, f"{case}: expected {stage} to refuse, got {refused_at}: {err}"
    assert re.search(message, str(err), re.S), f"{case}: unclear error:\n{err}"
    raw = lk.list_uris(lake.partition("raw", DAY))
    assert [hashlib.sha256(lk.read_bytes(u)).hexdigest() for u in raw] == [hashlib.sha256(data).hexdigest()]
    if stage == "validate":
        assert len(lk.read_parquet(lake.part("quarantine", DAY))) == 60, "rows lost"
    assert lake.batches("validated") == []


def test_declared_intent_lets_the_batch_through(shop):
    """The two ways out the messages name: na_values for sentinels, categorical_features for a category."""
    from airloop.config import parse_pipeline
    from airloop.data.ingest import ingest_batch
    from airloop.data.validate import validate_batch

    cfg, landing, lake = shop
    (landing / f"shop_{DAY}.csv").write_bytes(_sentinels(["unknown", "?"])())
    doc = cfg.model_dump()
    doc["source"]["options"] = {"na_values": ["unknown", "?"]}
    with_na = parse_pipeline(doc, "shop.yaml")
    ingest_batch(with_na, DAY, lake=lake)
    assert validate_batch(with_na, DAY, lake=lake, track=False)["verdict"].startswith("passed")
    staged = lk.read_parquet(lake.part("validated", DAY))
    assert pd.api.types.is_float_dtype(staged["monthly_charges"]) and staged["monthly_charges"].isna().sum() == 6
    as_category = parse_pipeline(
        {**cfg.model_dump(), "categorical_features": ["monthly_charges", "contract"]}, "shop.yaml"
    )
    assert validate_batch(as_category, DAY, lake=lake, track=False)["verdict"].startswith("passed")


def test_a_constant_target_is_fine_after_the_first_batch(shop):
    """A later day with one class (a quiet day) is not refused: the model was trained on varied data."""
    from airloop.data.ingest import ingest_batch
    from airloop.data.validate import validate_batch

    cfg, landing, lake = shop
    (landing / "shop_2026-01-04.csv").write_bytes(
        _frame()
        .assign(event_time=lambda f: f["event_time"].str.replace(DAY, "2026-01-04"))
        .to_csv(index=False)
        .encode()
    )
    ingest_batch(cfg, "2026-01-04", lake=lake)
    validate_batch(cfg, "2026-01-04", lake=lake, track=False)
    (landing / f"shop_{DAY}.csv").write_bytes(_constant_target())
    ingest_batch(cfg, DAY, lake=lake)
    assert validate_batch(cfg, DAY, lake=lake, track=False)["verdict"].startswith("passed")
