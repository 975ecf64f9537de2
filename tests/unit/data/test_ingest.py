import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest
from fixtures import DATA

from airloop.data.ingest import IngestError, NoNewData, ingest_batch, ingest_labels
from airloop.data.intervals import files_for_batch
from airloop.data.parse import parse_bytes
from airloop.store import lake as lk
from airloop.store.lake import Lake

CSV = (
    "customer_id,event_time,tenure_months,contract,churned\nC1,2026-01-02 10:00:00,5,one_year,0\n"
    "C2,2026-01-02 11:00:00,7,two_year,1\n"
)


@pytest.fixture
def landing(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def test_ingest_keeps_raw_bytes_stages_parquet_and_writes_manifest(tmp_path, landing, pipeline_cfg):
    (landing / "churn_2026-01-02.csv").write_text(CSV)
    (landing / "churn_2026-01-03.csv").write_text(CSV.replace("C1", "C9"))
    cfg = pipeline_cfg(f"{landing.as_uri()}/churn_*.csv")
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    out = ingest_batch(cfg, "2026-01-02", lake=lake, run_info={"dag_id": "d"})
    assert out["rows"] == 2 and out["files"] == 1
    raw = lk.read_bytes(lk.join(lake.partition("raw", "2026-01-02"), "churn_2026-01-02.csv"))
    assert raw == CSV.encode()
    staged = lk.read_parquet(out["staged_uri"])
    assert staged["customer_id"].tolist() == ["C1", "C2"] and set(staged["_batch_id"]) == {"2026-01-02"}
    manifest = lk.read_json(out["manifest_uri"])
    assert manifest["sources"][0]["sha256"] == hashlib.sha256(CSV.encode()).hexdigest()
    assert manifest["rows"] == 2 and manifest["run"] == {"dag_id": "d"} and "tenure_months" in manifest["schema"]
    # A rerun replaces: still two rows.
    assert ingest_batch(cfg, "2026-01-02", lake=lake)["rows"] == 2
    assert len(lk.read_parquet(out["staged_uri"])) == 2


def test_undated_files_are_selected_by_event_time(tmp_path, landing, pipeline_cfg):
    (landing / "export.csv").write_text(CSV + "C3,2026-01-03 01:00:00,1,one_year,0\n")
    cfg = pipeline_cfg(f"{landing.as_uri()}/*.csv")
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    assert ingest_batch(cfg, "2026-01-03", lake=lake)["rows"] == 1
    assert ingest_batch(cfg, "2026-01-02", lake=lake)["rows"] == 2


def test_no_files_for_interval_is_nothing_to_do(tmp_path, landing, pipeline_cfg):
    (landing / "churn_2026-01-02.csv").write_text(CSV)
    cfg = pipeline_cfg(f"{landing.as_uri()}/churn_*.csv")
    with pytest.raises(NoNewData, match="2026-01-09"):
        ingest_batch(cfg, "2026-01-09", lake=Lake("t", root=(tmp_path / "lake").as_uri()))


def test_bad_file_fails_clearly_but_raw_bytes_are_kept(tmp_path, landing, pipeline_cfg):
    (landing / "churn_2026-01-02.csv").write_bytes(b"customer_id,tenure\nC1,\xff\xfe\n")
    cfg = pipeline_cfg(f"{landing.as_uri()}/churn_*.csv")
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    with pytest.raises(IngestError, match=r"churn_2026-01-02.csv: expected UTF-8.*0xff"):
        ingest_batch(cfg, "2026-01-02", lake=lake)
    assert lk.exists(lk.join(lake.partition("raw", "2026-01-02"), "churn_2026-01-02.csv"))


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b"a;b;c\n1;2;3\n", "single column"), (b"PAR1 truncated", "cannot be parsed as parquet")],
)
def test_parse_errors_name_the_file(data, message):
    fmt = "parquet" if data.startswith(b"PAR1") else "csv"
    with pytest.raises(IngestError, match=message) as err:
        parse_bytes("file:///in/x.csv", data, fmt)
    assert "file:///in/x.csv" in str(err.value)


def test_files_for_batch_uses_dates_in_names():
    files = ["file:///l/a_2026-01-01.csv", "file:///l/a_2026-01-02.csv"]
    assert files_for_batch(files, "2026-01-02") == (["file:///l/a_2026-01-02.csv"], True)
    assert files_for_batch(["file:///l/all.csv"], "2026-01-02") == (["file:///l/all.csv"], False)


def test_labels_feed_lands_in_labels_zone(tmp_path, pipeline_cfg):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "labels_2026-01-03.csv").write_text("customer_id,churned\nC1,1\n")
    cfg = pipeline_cfg("file:///x/*.csv", labels={"uri": f"{labels.as_uri()}/labels_*.csv"})
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    assert ingest_labels(cfg, "2026-01-03", lake=lake)["rows"] == 1
    assert ingest_labels(cfg, "2026-01-04", lake=lake)["rows"] == 0
    assert lake.read_zone("labels")["churned"].tolist() == [1]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "labels_2026-01-03.csv").write_text("id,label\nC1,1\n")
    cfg = pipeline_cfg("file:///x/*.csv", labels={"uri": f"{bad.as_uri()}/labels_*.csv"})
    with pytest.raises(IngestError, match="customer_id"):
        ingest_labels(cfg, "2026-01-03", lake=lake)


def test_simulator_is_deterministic_and_drifts(tmp_path):
    from airloop.demo.simulate import SimulationSpec, simulate

    spec = SimulationSpec(history_rows=300, daily_rows=200, days=4, drift_day=3)
    a = simulate(tmp_path / "a", spec)
    simulate(tmp_path / "b", spec)
    assert a["drift_starts"] == "2026-01-03"
    files = sorted(p.name for p in (tmp_path / "a" / "landing").iterdir())
    assert files[0] == "churn_2025-12-31.csv" and len(files) == 5
    for name in files:
        assert (tmp_path / "a" / "landing" / name).read_bytes() == (tmp_path / "b" / "landing" / name).read_bytes()
    before = pd.read_csv(tmp_path / "a" / "landing" / "churn_2026-01-01.csv")
    after = pd.read_csv(tmp_path / "a" / "landing" / "churn_2026-01-04.csv")
    assert "churned" not in after.columns
    assert after["monthly_charges"].mean() > before["monthly_charges"].mean() + 10
    history = pd.read_csv(tmp_path / "a" / "landing" / "churn_2025-12-31.csv")
    assert 0.05 < history["churned"].mean() < 0.35 and history["monthly_charges"].isna().any()


# --- the bad-input corpus (tests/fixtures/data): each case fails clearly, and nothing is lost ------------------

DAY = "2026-01-05"

CORPUS = [
    # (file, the stage that refuses, what the message must say)
    ("empty.csv", "ingest", r"shop_2026-01-05\.csv: the file is empty \(0 data bytes\)"),
    ("header_only.csv", "ingest", r"shop_2026-01-05\.csv: has a header but no data rows"),
    ("wrong_delimiter.csv", "ingest", r"found a single column .*set source\.options\.sep"),
    ("not_utf8.csv", "ingest", r"shop_2026-01-05\.csv: expected UTF-8 text, found byte 0xf6 at offset \d+"),
    ("truncated.parquet", "ingest", r"shop_2026-01-05\.parquet: cannot be parsed as parquet"),
    ("missing_target.csv", "validate", r"expect_table_columns_to_match_set: missing columns \['churned'\]"),
    ("extra_column.csv", "validate", r"expect_table_columns_to_match_set: unexpected columns \['coupon_code'\]"),
    (
        "numeric_as_text.csv",
        "validate",
        r"expect_column_values_to_be_in_type_list on column 'tenure_months': 100% of rows failing "
        r"\(observed str; 60 of 60 values not numeric, e\.g\. '\d+ months'",
    ),
    (
        "all_null_column.csv",
        "validate",
        r"expect_column_values_to_not_be_null on column 'monthly_charges': 100% of rows failing",
    ),
    ("duplicates.csv", "validate", r"expect_column_values_to_be_unique on column 'customer_id': 33\.3% of rows"),
    (
        "out_of_range.csv",
        "validate",
        r"expect_column_values_to_be_between on column 'tenure_months': 15% of rows failing \(9 of 60 rows, e\.g\. -40",
    ),
    (
        "unseen_category.csv",
        "validate",
        r"expect_column_values_to_be_in_set on column 'region': 10% of rows failing \(6 of 60 rows, e\.g\. 'central'",
    ),
]


@pytest.fixture
def shop(tmp_path, monkeypatch, pipeline_cfg):
    """The `shop` pipeline with the suite suggested from tests/fixtures/data/reference.csv, and a private lake."""
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "shop.json").write_bytes((DATA / "suite.json").read_bytes())
    monkeypatch.setenv("AIRLOOP_SUITES_DIR", str(suites))
    landing = tmp_path / "landing"
    landing.mkdir()
    cfg = pipeline_cfg(f"{landing.as_uri()}/shop_*", name="shop")
    return cfg, landing, Lake("shop", root=(tmp_path / "lake").as_uri())


def run_gate(cfg, lake) -> tuple[str, Exception | None]:
    """Ingest then validate one batch, as the two DAGs do; returns which stage refused and its error."""
    from airloop.data.validate import validate_batch
    from airloop.errors import BadInput

    try:
        ingest_batch(cfg, DAY, lake=lake)
    except BadInput as err:
        return "ingest", err
    try:
        validate_batch(cfg, DAY, lake=lake, track=False)
    except BadInput as err:
        return "validate", err
    return "passed", None


def test_clean_batch_passes_the_gate_with_the_suggested_suite(shop):
    cfg, landing, lake = shop
    (landing / f"shop_{DAY}.csv").write_bytes((DATA / "good.csv").read_bytes())
    assert run_gate(cfg, lake) == ("passed", None)
    assert len(lk.read_parquet(lake.part("validated", DAY))) == 60


@pytest.mark.parametrize(("case", "stage", "message"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_fails_clearly_and_nothing_is_lost(shop, case, stage, message):
    cfg, landing, lake = shop
    name = f"shop_{DAY}{Path(case).suffix}"
    data = (DATA / case).read_bytes()
    (landing / name).write_bytes(data)

    refused_at, err = run_gate(cfg, lake)

    assert refused_at == stage, f"{case}: expected {stage} to refuse, got {refused_at}: {err}"
    assert re.search(message, str(err)), f"{case}: unclear error:\n{err}"
    # Nothing lost: the bytes as received are kept, byte for byte, and the manifest says what happened.
    raw = lk.join(lake.partition("raw", DAY), name)
    assert lk.read_bytes(raw) == data
    manifest = lk.read_json(lake.manifest(DAY))
    assert manifest["sources"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    if stage == "ingest":
        assert manifest["ingest_error"] == str(err)
    else:  # every row kept in quarantine, with the reason in the manifest
        assert manifest["validation"]["verdict"] == "quarantined" and manifest["validation"]["critical"]
        assert len(lk.read_parquet(lake.part("quarantine", DAY))) == manifest["rows"] > 0
    # Downstream (train, score) only reads validated/: the bad batch never reaches a model stage.
    assert not lk.exists(lake.part("validated", DAY))
    assert lake.batches("validated") == []


def test_batch_id_escaping_the_lake_is_refused_before_anything_is_written(shop):
    from airloop.store.lake import LakeError

    cfg, landing, lake = shop
    (landing / f"shop_{DAY}.csv").write_bytes((DATA / "good.csv").read_bytes())
    with pytest.raises(LakeError, match=r"batch id: expected a date like 2026-01-31, found '\.\./2026-01-05'"):
        ingest_batch(cfg, "../2026-01-05", lake=lake)
    assert lk.list_uris(lake.root) == []
    assert (landing / f"shop_{DAY}.csv").read_bytes() == (DATA / "good.csv").read_bytes()


def test_object_key_escaping_the_lake_is_refused():
    from airloop.data.raw import raw_name
    from airloop.store.lake import LakeError

    assert raw_name("date=2026-01-05/part_1.csv") == ["date=2026-01-05", "part_1.csv"]
    folder, name = raw_name("date=2026-01-05/part 1.csv")
    assert folder == "date=2026-01-05" and re.fullmatch(r"part_1--[0-9a-f]{8}\.csv", name)
    for key in ("../../etc/passwd_2026-01-05.csv", "a/./b.csv", "x/../y.csv"):
        with pytest.raises(LakeError, match="would escape the lake; nothing was copied"):
            raw_name(key)


# --- sources, streaming and atomicity ----------------------------------------------------------------------------


def test_partitioned_folders_and_jsonl(tmp_path, landing, pipeline_cfg):
    for day, ids in (("2026-01-02", ["C1", "C2"]), ("2026-01-03", ["C3"])):
        part = landing / f"date={day}"
        part.mkdir()
        frame = pd.DataFrame({"customer_id": ids, "event_time": f"{day} 10:00:00", "tenure_months": 3, "churned": 0})
        frame.to_json(part / "part-0.jsonl", orient="records", lines=True)
    (landing / "date=2026-01-03" / "_SUCCESS").write_text("")  # markers are not data
    cfg = pipeline_cfg(f"{landing.as_uri()}/date=*/*.jsonl")
    lake = Lake("t", root=(tmp_path / "lake").as_uri())

    out = ingest_batch(cfg, "2026-01-03", lake=lake)

    assert out["rows"] == 1 and out["files"] == 1
    assert lk.read_parquet(out["staged_uri"])["customer_id"].tolist() == ["C3"]
    assert lk.exists(lk.join(lake.partition("raw", "2026-01-03"), "date=2026-01-03", "part-0.jsonl"))
    # A folder URI (no glob) lists recursively too.
    assert ingest_batch(pipeline_cfg(landing.as_uri()), "2026-01-02", lake=lake)["rows"] == 2


def test_large_batches_stream_through_the_chunked_path(tmp_path, landing, pipeline_cfg, monkeypatch):
    import airloop.data.ingest as ingest
    import airloop.data.parse as parse

    rows = 5000
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(rows)],
            "event_time": pd.date_range("2026-01-02", periods=rows, freq="30s").strftime("%Y-%m-%d %H:%M:%S"),
            "tenure_months": range(rows),
            "churned": [i % 2 for i in range(rows)],
        }
    )
    (landing / "export.csv").write_text(frame.to_csv(index=False))
    monkeypatch.setattr(ingest, "SMALL_BATCH_BYTES", 0)  # everything is "large"
    monkeypatch.setattr(parse, "STREAM_BLOCK_BYTES", 16 << 10)  # many chunks
    cfg = pipeline_cfg(f"{landing.as_uri()}/*.csv", source={"uri": f"{landing.as_uri()}/*.csv", "chunk_rows": 1000})
    lake = Lake("t", root=(tmp_path / "lake").as_uri())

    out = ingest_batch(cfg, "2026-01-02", lake=lake)

    staged = lk.read_parquet(out["staged_uri"])
    expected = frame[frame["event_time"] < "2026-01-03"]
    assert out["rows"] == len(staged) == len(expected) == 2880  # one day of 30 s steps, selected by event time
    assert staged["customer_id"].tolist() == expected["customer_id"].tolist()
    assert str(staged["event_time"].dtype).startswith("datetime64")
    assert lk.read_json(out["manifest_uri"])["rows_read"] == rows


def test_a_failure_mid_stream_leaves_no_half_batch(tmp_path, landing, pipeline_cfg, monkeypatch):
    import airloop.data.ingest as ingest
    import airloop.data.parse as parse

    good = "customer_id,tenure_months\n" + "".join(f"C{i},{i}\n" for i in range(3000))
    (landing / "t_2026-01-02.csv").write_text(good)
    cfg = pipeline_cfg(f"{landing.as_uri()}/*.csv")
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    ingest_batch(cfg, "2026-01-02", lake=lake)
    before = lk.read_bytes(lake.part("staged", "2026-01-02"))

    # A rerun whose data turns bad after the first chunks (a type pyarrow cannot convert) must not replace the
    # staged batch with half of the new one, nor leave temporary objects behind.
    (landing / "t_2026-01-02.csv").write_text(good + "C9,not-a-number\n")
    monkeypatch.setattr(ingest, "SMALL_BATCH_BYTES", 0)
    monkeypatch.setattr(parse, "STREAM_BLOCK_BYTES", 4 << 10)
    with pytest.raises(IngestError, match=r"t_2026-01-02\.csv: cannot be parsed as csv: .*not-a-number"):
        ingest_batch(cfg, "2026-01-02", lake=lake)

    assert lk.read_bytes(lake.part("staged", "2026-01-02")) == before
    assert not [p for p in (tmp_path / "lake").rglob("*") if ".tmp-" in p.name or p.name.endswith(".incoming")]
    # The new bytes are kept as received, and so are the ones received before.
    raw = lake.partition("raw", "2026-01-02")
    assert lk.read_bytes(lk.join(raw, "t_2026-01-02.csv")).endswith(b"C9,not-a-number\n")
    superseded = [u for u in lk.list_uris(raw) if ".superseded-" in u]
    assert len(superseded) == 1 and lk.read_bytes(superseded[0]) == good.encode()


def test_a_named_file_that_does_not_exist_is_an_error_not_an_empty_day(tmp_path, pipeline_cfg):
    from airloop.data.sources import SourceError

    cfg = pipeline_cfg((tmp_path / "missing_2026-01-02.csv").as_uri())
    with pytest.raises(SourceError, match=r"missing_2026-01-02\.csv: no such file"):
        ingest_batch(cfg, "2026-01-02", lake=Lake("t", root=(tmp_path / "lake").as_uri()))
