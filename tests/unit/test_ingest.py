import hashlib

import pandas as pd
import pytest

from airloop import lake as lk
from airloop.ingest import IngestError, NoNewData, files_for_batch, ingest_batch, ingest_labels, parse_bytes
from airloop.lake import Lake

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
    from airloop.simulate import SimulationSpec, simulate

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
