"""Ingestion from real sources: S3 on SeaweedFS (loopback) and the machine's PostgreSQL. Each failure case is
clear and loses nothing."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from airloop.data.ingest import ingest_batch
from airloop.data.sources import SourceError, SourceUnavailable
from airloop.store import lake as lk
from airloop.store.lake import Lake

pytestmark = pytest.mark.integration
DAY = "2026-01-05"


def batch_csv(day: str, ids: list[str]) -> bytes:
    frame = pd.DataFrame(
        {"customer_id": ids, "event_time": f"{day} 09:00:00", "tenure_months": range(len(ids)), "churned": 0}
    )
    return frame.to_csv(index=False).encode()


@pytest.fixture
def landing(s3_env):
    """A bucket with dated objects and a partitioned folder; returns (bucket, the bytes of DAY's object)."""
    bucket = s3_env.new_bucket()
    client = s3_env.client()
    data = batch_csv(DAY, ["C1", "C2", "C3"])
    client.put_object(Bucket=bucket, Key=f"landing/shop_{DAY}.csv", Body=data)
    client.put_object(Bucket=bucket, Key="landing/shop_2026-01-06.csv", Body=batch_csv("2026-01-06", ["C9"]))
    client.put_object(Bucket=bucket, Key=f"parts/date={DAY}/part-0.csv", Body=data)
    client.put_object(Bucket=bucket, Key=f"parts/date={DAY}/_SUCCESS", Body=b"")
    return bucket, data


# --- S3 -----------------------------------------------------------------------------------------------------


def test_s3_source_ingests_its_interval_and_keeps_the_bytes(landing, tmp_path, pipeline_cfg):
    bucket, data = landing
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    cfg = pipeline_cfg(f"s3://{bucket}/landing/shop_*.csv")

    out = ingest_batch(cfg, DAY, lake=lake)

    assert out["rows"] == 3 and out["files"] == 1
    assert lk.read_bytes(lk.join(lake.partition("raw", DAY), f"shop_{DAY}.csv")) == data
    manifest = lk.read_json(out["manifest_uri"])
    assert manifest["sources"][0]["uri"] == f"s3://{bucket}/landing/shop_{DAY}.csv"
    assert manifest["sources"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert ingest_batch(cfg, DAY, lake=lake)["rows"] == 3  # a rerun replaces, never duplicates
    assert len(lk.read_parquet(out["staged_uri"])) == 3


def test_s3_partitioned_folder_into_an_s3_lake(landing, s3_env, pipeline_cfg):
    bucket, data = landing
    lake = Lake("t", root=f"s3://{s3_env.new_bucket('lake')}/lake")
    cfg = pipeline_cfg(f"s3://{bucket}/parts")  # a prefix: every object under it, by partition folder

    out = ingest_batch(cfg, DAY, lake=lake)

    assert out["rows"] == 3 and out["files"] == 1  # _SUCCESS is a marker, not data
    assert lk.read_bytes(lk.join(lake.partition("raw", DAY), f"date={DAY}", "part-0.csv")) == data
    assert lake.batches("staged") == [DAY]
    assert not [u for u in lk.list_uris(lake.root) if ".tmp-" in u or u.endswith(".incoming")]


def test_s3_credentials_from_an_airflow_connection(landing, s3_env, tmp_path, pipeline_cfg, monkeypatch):
    from airloop.orchestration.dagkit import connection_dict

    bucket, _ = landing
    conn = {
        "conn_type": "aws",
        "login": s3_env.reader_key,  # read-only identity: ingestion only reads the source
        "password": s3_env.reader_secret,
        "extra": {"endpoint_url": s3_env.endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_LANDING", json.dumps(conn))
    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)  # nothing from the environment: the connection alone must do
    resolved = connection_dict("shop_landing")
    assert resolved["login"] == s3_env.reader_key and resolved["extra"]["endpoint_url"] == s3_env.endpoint

    cfg = pipeline_cfg(f"s3://{bucket}/landing/*.csv", source={"uri": f"s3://{bucket}/landing/*.csv"})
    out = ingest_batch(cfg, DAY, lake=Lake("t", root=(tmp_path / "lake").as_uri()), connection=resolved)
    assert out["rows"] == 3


def test_s3_object_missing_is_named(landing, tmp_path, pipeline_cfg):
    bucket, _ = landing
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    with pytest.raises(SourceError, match=rf"s3://{bucket}/landing/shop_2026-01-07\.csv: no such object"):
        ingest_batch(pipeline_cfg(f"s3://{bucket}/landing/shop_2026-01-07.csv"), "2026-01-07", lake=lake)
    with pytest.raises(SourceError, match=r"bucket 'no-such-bucket-x1' does not exist"):
        ingest_batch(pipeline_cfg("s3://no-such-bucket-x1/landing/*.csv"), DAY, lake=lake)
    assert lk.list_uris(lake.root) == []


def test_s3_access_denied_is_clear_and_loses_nothing(landing, s3_env, tmp_path, pipeline_cfg, monkeypatch):
    bucket, data = landing
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")

    with pytest.raises(SourceError, match=rf"s3://{bucket}/landing/\*\.csv: access denied \(\w+\); expected cred"):
        ingest_batch(pipeline_cfg(f"s3://{bucket}/landing/*.csv"), DAY, lake=lake)

    assert lk.list_uris(lake.root) == []  # nothing half-copied
    body = s3_env.client().get_object(Bucket=bucket, Key=f"landing/shop_{DAY}.csv")["Body"].read()
    assert body == data  # the source is untouched


# --- SQL ----------------------------------------------------------------------------------------------------


@pytest.fixture
def events_db(postgres_url):
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "create table events (customer_id text, event_time timestamp, tenure_months int, churned int);"
                "insert into events values ('C1', '2026-01-04 23:59:59', 1, 0), ('C2', '2026-01-05 00:00:00', 2, 1),"
                "('C3', '2026-01-05 23:00:00', 3, 0), ('C4', '2026-01-06 00:00:00', 4, 1);"
            )
        )
    engine.dispose()
    return postgres_url


def test_sql_table_ingests_only_the_interval_and_keeps_the_rows_as_received(events_db, tmp_path, pipeline_cfg):
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    cfg = pipeline_cfg(events_db, source={"uri": events_db, "table": "events", "chunk_rows": 1000})

    out = ingest_batch(cfg, DAY, lake=lake)

    assert out["rows"] == 2
    staged = lk.read_parquet(out["staged_uri"])
    assert staged["customer_id"].tolist() == ["C2", "C3"]
    raw = lk.read_parquet(lk.join(lake.partition("raw", DAY), "events.parquet"))
    assert raw["customer_id"].tolist() == ["C2", "C3"] and "_batch_id" not in raw.columns
    manifest = lk.read_json(out["manifest_uri"])
    assert manifest["sources"][0]["uri"].endswith("#events") and manifest["sources"][0]["sha256"]
    assert ingest_batch(cfg, DAY, lake=lake)["rows"] == 2  # a rerun replaces


def test_sql_query_with_credentials_from_the_connection(events_db, tmp_path, pipeline_cfg):
    bare = events_db.replace("postgres@", "")  # no user in the URI: it comes from the connection
    query = "select customer_id, event_time, tenure_months * 10 as tenure_months, churned from events"
    cfg = pipeline_cfg(bare, source={"uri": bare, "query": query})
    out = ingest_batch(
        cfg, DAY, lake=Lake("t", root=(tmp_path / "lake").as_uri()), connection={"login": "postgres", "password": ""}
    )
    assert lk.read_parquet(out["staged_uri"])["tenure_months"].tolist() == [20, 30]


def test_sql_connection_refused_is_clear_and_retryable(tmp_path, pipeline_cfg):
    from fixtures.services import free_port

    port = free_port()
    uri = f"postgresql://postgres:secret@127.0.0.1:{port}/shop"
    lake = Lake("t", root=(tmp_path / "lake").as_uri())
    with pytest.raises(SourceUnavailable, match=rf"127\.0\.0\.1:{port}/shop: cannot connect to the database") as err:
        ingest_batch(pipeline_cfg(uri, source={"uri": uri, "table": "events"}), DAY, lake=lake)
    assert "secret" not in str(err.value)  # the password is never shown
    assert "refused" in str(err.value).lower()
    assert not isinstance(err.value, ValueError)  # not BadInput: Airflow retries a refused connection
    assert lk.list_uris(lake.root) == []


def test_sql_unknown_table_is_named(events_db, tmp_path, pipeline_cfg):
    cfg = pipeline_cfg(events_db, source={"uri": events_db, "table": "evnts"})
    with pytest.raises(SourceError, match=r"table 'evnts' cannot be read: .*evnts.* does not exist"):
        ingest_batch(cfg, DAY, lake=Lake("t", root=(tmp_path / "lake").as_uri()))
