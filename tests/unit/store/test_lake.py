import pandas as pd
import pytest

from airloop.store import lake as lk
from airloop.store.lake import Lake, LakeError


def test_parquet_roundtrip_and_atomic_replace(tmp_path):
    lake = Lake("p", root=tmp_path.as_uri())
    uri = lake.part("validated", "2026-01-02")
    lk.write_parquet(uri, pd.DataFrame({"a": [1, 2]}))
    lk.write_parquet(uri, pd.DataFrame({"a": [3]}))  # a rerun replaces, never appends
    assert lk.read_parquet(uri)["a"].tolist() == [3]
    assert lake.batches("validated") == ["2026-01-02"]
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize("bad", ["../2026-01-01", "2026-01-01/../../etc", "2026-13", "", "x"])
def test_batch_ids_cannot_escape_the_lake(tmp_path, bad):
    with pytest.raises(LakeError, match="batch id"):
        Lake("p", root=tmp_path.as_uri()).part("raw", bad)


def test_join_refuses_traversal():
    with pytest.raises(LakeError, match=r"'\.\.'"):
        lk.join("file:///lake", "p", "..", "etc")


def test_missing_object_is_named(tmp_path):
    uri = (tmp_path / "nope.parquet").as_uri()
    with pytest.raises(LakeError, match="nope.parquet"):
        lk.read_parquet(uri)


def test_read_zone_concatenates_batches(tmp_path):
    lake = Lake("p", root=tmp_path.as_uri())
    for day, n in (("2026-01-01", 2), ("2026-01-02", 3)):
        lk.write_parquet(lake.part("validated", day), pd.DataFrame({"x": range(n)}))
    assert len(lake.read_zone("validated")) == 5
    assert len(lake.read_zone("validated", ["2026-01-02"])) == 3
    assert lake.read_zone("quarantine").empty
