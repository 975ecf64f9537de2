"""The serving log in the lake: :func:`write_serving_log` takes served predictions (a pyarrow Table or a
DataFrame) and returns the URI of the Parquet part it wrote under ``serving/date=<day>/``;
:func:`read_serving_log` returns them as a frame. Also the prediction ids and the client's entity ids that
make a served prediction traceable and joinable to its delayed label.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pandas as pd

from airloop.store import lake as lk
from airloop.store.lake import Lake

SERVING_ZONE = "serving"


class IdMaker:
    """Prediction ids ``{pipeline}:serve-{YYYY-MM-DD}:{hex}``: unique, and the date says where the log is."""

    def __init__(self, pipeline: str):
        self.pipeline = pipeline

    def make(self, n: int) -> list[str]:
        prefix = f"{self.pipeline}:serve-{dt.datetime.now(dt.UTC).date().isoformat()}:"
        return [prefix + uuid.uuid4().hex[:16] for _ in range(n)]


def write_serving_log(lake: Lake, table: Any) -> str:
    """Append served predictions (a pyarrow Table or a DataFrame) to
    ``serving/date=<day>/part-<time>-<uid>.parquet``; returns the URI."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    day = str(table.column("served_at")[0])[:10]
    name = f"part-{dt.datetime.now(dt.UTC).strftime('%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return lk.write_bytes(lk.join(lake.partition(SERVING_ZONE, day), name), buf.getvalue())


def read_serving_log(lake: Lake, days: list[str] | None = None) -> pd.DataFrame:
    """Served predictions of the given days (default: all), oldest file first; empty frame when none."""
    days = days if days is not None else lake.batches(SERVING_ZONE)
    frames = [lk.read_parquet(u) for d in days for u in lk.list_uris(lake.partition(SERVING_ZONE, d))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
