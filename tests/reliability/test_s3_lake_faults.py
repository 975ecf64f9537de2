"""Defect 8: large files reach an S3 lake (SeaweedFS here): a streamed multipart upload and a multipart copy
of 1 GiB, with nothing left behind on failure (no object, no pending upload); and a whole ingest onto S3."""

from __future__ import annotations

import hashlib
import time

import pytest

from airloop.store import lake as lk
from airloop.store import s3

pytestmark = pytest.mark.integration  # needs the real S3 server (SeaweedFS)

GIB = 1 << 30
BLOCK = 8 << 20


def _generated(total: int, fail_at: int | None = None):
    """``total`` bytes in 8 MiB blocks, generated (nothing on disk); raises after ``fail_at`` bytes."""
    block = bytes(range(256)) * (BLOCK // 256)
    sent = 0
    while sent < total:
        if fail_at is not None and sent >= fail_at:
            raise ConnectionResetError("the source dropped the connection")
        n = min(BLOCK, total - sent)
        sent += n
        yield block[:n]


def _expected_sha(total: int) -> str:
    digest = hashlib.sha256()
    for chunk in _generated(total):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def bucket(s3_env):
    return s3_env.new_bucket("large")


def test_a_1_gib_object_streams_to_s3_and_moves_by_multipart_copy(bucket, s3_env):
    uri = f"s3://{bucket}/lake/p/raw/date=2026-01-05/big.csv"
    started = time.monotonic()
    _, sha, size = lk.write_stream(uri, _generated(GIB))
    upload_s = time.monotonic() - started
    assert size == GIB and sha == _expected_sha(GIB)
    head = s3_env.client().head_object(Bucket=bucket, Key=uri.split(f"{bucket}/", 1)[1])
    assert head["ContentLength"] == GIB
    moved = uri + ".superseded-abc"
    started = time.monotonic()
    lk.move(uri, moved)  # what a re-ingest does with the earlier bytes: was one CopyObject, timing out
    copy_s = time.monotonic() - started
    assert (
        not lk.exists(uri)
        and s3_env.client().head_object(Bucket=bucket, Key=moved.split(f"{bucket}/", 1)[1])["ContentLength"] == GIB
    )
    assert s3.pending_uploads(f"s3://{bucket}/lake") == []
    print(f"1 GiB to SeaweedFS: upload {upload_s:.1f} s, multipart copy {copy_s:.1f} s (machine loaded)")


def test_a_failed_large_upload_leaves_no_object_and_no_pending_upload(bucket):
    uri = f"s3://{bucket}/lake/p/raw/date=2026-01-05/broken.csv"
    with pytest.raises(ConnectionResetError):
        lk.write_stream(uri, _generated(GIB, fail_at=100 << 20))
    assert not lk.exists(uri)
    assert s3.pending_uploads(f"s3://{bucket}/lake") == [], "a pending multipart upload was left behind"
    assert lk.temporaries(f"s3://{bucket}/lake") == []


def test_a_killed_upload_is_cleaned_by_the_next_ingest_of_the_batch(bucket):
    """kill -9 leaves a pending multipart upload (no abort ran): clean_temporaries aborts it."""
    prefix = f"s3://{bucket}/lake/p/raw/date=2026-01-05"
    writer = s3.MultipartWriter(f"{prefix}/killed.csv")
    writer.write(b"x" * (s3.PART_BYTES + 1))  # one part uploaded, then the process "dies"
    assert len(s3.pending_uploads(prefix)) == 1
    assert lk.clean_temporaries(prefix) == [f"{prefix}/killed.csv (pending upload)"]
    assert s3.pending_uploads(prefix) == []


def test_ingest_and_validate_onto_an_s3_lake_stream_large_batches(bucket, tmp_path, pipeline_cfg, monkeypatch):
    """The whole ingest on S3 through the streamed path (raw multipart upload, staged Parquet multipart),
    then a rerun with changed bytes (the earlier raw bytes moved aside, kept)."""
    import pandas as pd

    import airloop.data.ingest as ingest
    from airloop.store.lake import Lake

    monkeypatch.setattr(ingest, "SMALL_BATCH_BYTES", 0)
    monkeypatch.setattr(s3, "PART_BYTES", 5 << 20)  # several parts without a big file
    rows = 200_000
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(rows)],
            "event_time": "2026-01-05 10:00:00",
            "tenure_months": range(rows),
            "churned": [i % 2 for i in range(rows)],
        }
    )
    landing = tmp_path / "landing"
    landing.mkdir()
    source = landing / "shop_2026-01-05.csv"
    source.write_bytes(frame.to_csv(index=False).encode())
    first = hashlib.sha256(source.read_bytes()).hexdigest()
    cfg = pipeline_cfg(f"{landing.as_uri()}/shop_*.csv", name="shop")
    lake = Lake("shop", root=f"s3://{bucket}/lake")
    out = ingest.ingest_batch(cfg, "2026-01-05", lake=lake)
    assert out["rows"] == rows and len(lk.read_parquet(out["staged_uri"])) == rows
    source.write_bytes(frame.head(1000).to_csv(index=False).encode())  # fixed upstream
    ingest.ingest_batch(cfg, "2026-01-05", lake=lake)
    raw = {u: hashlib.sha256(lk.read_bytes(u)).hexdigest() for u in lk.list_uris(lake.partition("raw", "2026-01-05"))}
    assert first in raw.values() and len(raw) == 2, "the earlier raw bytes were lost"
    assert lk.temporaries(lake.root) == [] and s3.pending_uploads(lake.root) == []
