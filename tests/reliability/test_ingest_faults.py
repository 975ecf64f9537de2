"""Defect 5 and kill -9 during ingest: raw bytes are never lost, and a killed ingest leaves no temporary
object behind once it is rerun."""

from __future__ import annotations

import hashlib
import signal

import pandas as pd
import pytest
from fixtures.faultkit import run_child

from airloop.store import lake as lk
from airloop.store.lake import Lake

DAY = "2026-02-01"


def _csv(ids: range) -> bytes:
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in ids],
            "event_time": [f"{DAY} 10:00:00"] * len(ids),
            "tenure_months": [i % 40 for i in ids],
            "churned": [i % 2 for i in ids],
        }
    )
    return frame.to_csv(index=False).encode()


def _raw_digests(lake: Lake) -> dict[str, str]:
    return {
        uri.rsplit("/", 1)[1]: hashlib.sha256(lk.read_bytes(uri)).hexdigest()
        for uri in lk.list_uris(lake.partition("raw", DAY))
    }


@pytest.mark.parametrize("path", ["small", "large"])
def test_two_source_names_that_sanitise_alike_keep_both_files(tmp_path, pipeline_cfg, monkeypatch, path):
    import airloop.data.ingest as ingest

    if path == "large":  # the streamed path, where the collision used to read one file twice
        monkeypatch.setattr(ingest, "SMALL_BATCH_BYTES", 0)
    landing = tmp_path / "landing"
    landing.mkdir()
    spaced, underscored = _csv(range(0, 300)), _csv(range(300, 500))
    (landing / f"tiny {DAY}.csv").write_bytes(spaced)
    (landing / f"tiny_{DAY}.csv").write_bytes(underscored)
    cfg = pipeline_cfg(f"{landing.as_uri()}/tiny*.csv")
    lake = Lake("t", root=(tmp_path / "lake").as_uri())

    out = ingest.ingest_batch(cfg, DAY, lake=lake)

    kept = set(_raw_digests(lake).values())
    assert {hashlib.sha256(b).hexdigest() for b in (spaced, underscored)} <= kept, "a file's raw bytes were lost"
    staged = lk.read_parquet(out["staged_uri"])
    assert out["rows"] == len(staged) == 500 and staged["customer_id"].is_unique


def test_two_objects_mapping_to_one_raw_name_copy_nothing(tmp_path):
    """The last guard: if two objects still mapped to one raw name, nothing is copied (no silent loss)."""
    from airloop.data import sources
    from airloop.data.raw import refuse_collisions

    objs = [sources.SourceObject(uri=f"file:///x/{n}", relative=n, size=1) for n in ("a", "b")]
    with pytest.raises(lk.LakeError, match="both map to raw name"):
        refuse_collisions(objs, ["file:///lake/raw/a", "file:///lake/raw/a"])


KILL_MID_COPY = """
import os, signal
import airloop.data.ingest as ingest
import airloop.data.parse as parse
from airloop.config import parse_pipeline
from airloop.store import lake as lk
from airloop.store.lake import Lake

real = lk.write_stream
calls = []


def write_stream(uri, chunks):
    calls.append(uri)
    if len(calls) == 2:  # the first file is in raw/, the second half copied: kill -9
        def dying():
            yield next(iter(chunks))
            os.kill(os.getpid(), signal.SIGKILL)

        return real(uri, dying())
    return real(uri, chunks)


lk.write_stream = write_stream
parse.STREAM_BLOCK_BYTES = 4096
cfg = parse_pipeline({{"name": "t", "source": {{"uri": {source!r}}}, "target": "churned",
                      "task": "classification"}}, "t.yaml")
ingest.ingest_batch(cfg, {day!r}, lake=Lake("t", root={root!r}))
"""


def test_kill_9_mid_ingest_loses_nothing_and_a_rerun_cleans_up(tmp_path, pipeline_cfg):
    from airloop.data.ingest import ingest_batch

    landing = tmp_path / "landing"
    landing.mkdir()
    files = {f"a_{DAY}.csv": _csv(range(0, 2000)), f"b_{DAY}.csv": _csv(range(2000, 4000))}
    for name, data in files.items():
        (landing / name).write_bytes(data)
    source, root = f"{landing.as_uri()}/*.csv", (tmp_path / "lake").as_uri()
    child = run_child(KILL_MID_COPY.format(source=source, day=DAY, root=root))
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    lake = Lake("t", root=root)
    # the source is untouched; nothing half-written is visible under a final name
    assert all((landing / n).read_bytes() == d for n, d in files.items())
    staged = lake.part("staged", DAY)
    assert not lk.exists(staged) and not lk.exists(lake.manifest(DAY))
    assert lk.temporaries(root), "the kill should have left a half-copied temporary (else this test proves nothing)"
    ingest_batch(pipeline_cfg(source), DAY, lake=lake)  # the retry Airflow makes
    digests = _raw_digests(lake)
    assert digests == {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    assert lk.temporaries(root) == [], "temporary objects left behind"
    assert len(lk.read_parquet(staged)) == 4000
