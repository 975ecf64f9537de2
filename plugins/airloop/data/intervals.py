"""What belongs to a batch: the source files of a data interval, and its rows by event time.

A batch is the data interval starting on ``batch_id`` (a date). Files whose name or partition folder carries
a date (``churn_2026-01-05.csv``, ``date=2026-01-05/part.csv``) belong to that day's batch; otherwise every
file is read and rows are selected by the pipeline's ``event_time_column``.

In: a source URI (and its resolved connection) or a list of file URIs, a batch id, a frame. Out: file URIs,
the latest event day, or the frame's rows in the interval. Used by :mod:`airloop.data.ingest` and by the
backfill planning in :mod:`airloop.orchestration.lifecycle`.
"""

from __future__ import annotations

import io

import pandas as pd

from airloop.config import PipelineConfig
from airloop.data import sources
from airloop.data.parse import IngestError, format_of


def list_source_files(uri: str, connection: dict | None = None) -> list[str]:
    """URIs of the files or objects a source URI names (globs, folders and prefixes included)."""
    return [o.uri for o in sources.list_objects(uri, connection)]


def latest_event_day(cfg: PipelineConfig, connection: dict | None = None) -> str | None:
    """The day (YYYY-MM-DD) of the latest ``event_time_column`` value in the source's files; None when the
    pipeline has no event-time column or no file has a parseable time. Reads that one column."""
    col = cfg.event_time_column
    if not col or sources.is_sql(cfg.source.uri):
        return None
    latest = None
    for obj in sources.list_objects(cfg.source.uri, connection):
        fmt = format_of(obj.uri, cfg.source.format)
        with sources.open_object(obj.uri, connection) as stream:
            data = stream.read()
        if fmt == "csv":
            frame = pd.read_csv(io.BytesIO(data), usecols=lambda c: c == col, **cfg.source.options)
        elif fmt == "parquet":
            frame = pd.read_parquet(io.BytesIO(data), columns=[col])
        else:
            frame = pd.read_json(io.BytesIO(data), lines=True, **cfg.source.options)
        if col in frame.columns:
            times = pd.to_datetime(frame[col], errors="coerce").dropna()
            if len(times) and (latest is None or times.max() > latest):
                latest = times.max()
    return None if latest is None else latest.date().isoformat()


def files_for_batch(files: list[str], batch_id: str) -> tuple[list[str], bool]:
    """Select the files of one batch by the date in their name or partition folder; returns
    (files, partitioned). When no file carries a date, every file is returned (rows are then selected by
    the event-time column)."""
    dated = {f: sources.batch_date(f) for f in files}
    if any(dated.values()):
        return [f for f, d in dated.items() if d == batch_id], True
    return files, False


def rows_in_interval(frame: pd.DataFrame, column: str, batch_id: str, uri: str, history: bool) -> pd.DataFrame:
    """The rows of ``frame`` whose ``column`` time falls on the batch's day (with ``history``: up to its end);
    rows with an unparseable time are dropped. IngestError naming ``uri`` when the column is missing."""
    if column not in frame.columns:
        found = sorted(map(str, frame.columns))
        raise IngestError(f"{uri}: event-time column {column!r} is missing (found {found})")
    start = pd.Timestamp(batch_id)
    times = pd.to_datetime(frame[column], errors="coerce")
    end = times < start + pd.Timedelta(days=1)
    return frame[end if history else (times >= start) & end]
