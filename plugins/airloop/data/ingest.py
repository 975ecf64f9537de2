"""Ingestion, the stage entry point: one data interval's source data into the lake, kept as received and
staged as Parquet, plus the labels that arrived in it.

In: the pipeline config, a ``batch_id`` (the data interval starting on that date), the resolved source
connection. Out: the ingest result dict (rows, files, bytes, staged and manifest URIs, a summary). Sources are
files or objects (``file://``, ``s3://``; CSV, Parquet, JSON Lines; globs and partitioned folders) or a SQL
table or query (``postgresql://``). The steps live in their own modules, in the order they run:

- :mod:`airloop.data.intervals`: which files and rows belong to the batch (date in the name, or event time);
- :mod:`airloop.data.raw`: the raw bytes copied to ``raw/`` as received (streamed), also when parsing fails;
- :mod:`airloop.data.parse`: bytes into frames, with errors that name the file (:class:`IngestError`);
- :mod:`airloop.data.staging`: the staged Parquet part and the batch manifest.

Reading sources is :mod:`airloop.data.sources`.
"""

from __future__ import annotations

import hashlib
import logging

import pandas as pd
import pyarrow as pa

from airloop.config import PipelineConfig
from airloop.data import raw, sources, staging
from airloop.data.intervals import files_for_batch
from airloop.data.parse import IngestError, format_of, parse_bytes
from airloop.errors import NothingToDo
from airloop.store import lake as lk
from airloop.store.lake import Lake

SMALL_BATCH_BYTES = 64 << 20  # below this a batch is parsed in memory with pandas (fast for daily files)

log = logging.getLogger(__name__)


class NoNewData(NothingToDo):
    """The data interval has no source files or rows (yet)."""


def ingest_batch(
    cfg: PipelineConfig,
    batch_id: str,
    *,
    lake: Lake | None = None,
    run_info: dict | None = None,
    connection: dict | None = None,
    history: bool = False,
) -> dict:
    """Copy the batch's source data to ``raw/``, stage it as Parquet and write the manifest.

    With ``history`` (undated files with an event-time column) the batch takes every row up to the end of
    its day, not only that day's: the one initial batch of a source whose past is already in its files.

    ``connection`` is the resolved credentials dict of ``source.connection`` (see :mod:`airloop.data.sources`).
    Returns {"batch_id", "rows", "files", "bytes", "staged_uri", "manifest_uri", "summary"}. Raises
    :class:`NoNewData` when the interval has no files or rows, :class:`IngestError` when a file cannot be
    used (its raw bytes are kept, and the manifest records the error), ``SourceError``/``SourceUnavailable``
    when the source cannot be read.
    """
    lake = lake or Lake(cfg.name)
    lk.check_batch_id(batch_id)
    if sources.is_sql(cfg.source.uri):
        return _ingest_sql(cfg, batch_id, lake, run_info, connection)
    objects = sources.list_objects(cfg.source.uri, connection)
    by_uri = {o.uri: o for o in objects}
    files, by_name = files_for_batch(list(by_uri), batch_id)
    if not files:
        raise NoNewData(f"pipeline {cfg.name!r}: no source files for batch {batch_id} under {cfg.source.uri}")
    chosen = [by_uri[f] for f in files]
    partition = lake.partition("raw", batch_id)
    # One ingest per batch at a time (Airflow runs one try of a task): what a killed try left is garbage.
    for left in (partition, lake.partition("staged", batch_id)):
        if gone := lk.clean_temporaries(left):
            log.warning("removed %d temporary object(s) a killed ingest left: %s", len(gone), gone)
    # Every destination is checked before the first byte is copied: an escaping key copies nothing.
    dests = [lk.join(partition, *raw.raw_name(o.relative)) for o in chosen]
    small = sum(o.size or 0 for o in chosen) <= SMALL_BATCH_BYTES
    manifest_uri = lake.manifest(batch_id)
    copied = raw.copy_batch(chosen, dests, small, manifest_uri, connection)
    sources_meta = [{k: v for k, v in e.items() if k != "data"} for e in copied]
    base = {"pipeline": cfg.name, "batch_id": batch_id, "source_uri": cfg.source.uri, "sources": sources_meta}
    stager = staging.Stager(cfg, batch_id, select_interval=not by_name, history=history)
    try:
        rows, schema = staging.stage_files(cfg, lake.part("staged", batch_id), copied, stager, small)
    except IngestError as err:
        staging.record_ingest_error(manifest_uri, base, err, run_info)
        raise
    return _finish(cfg, lake, batch_id, base, rows, schema, stager, run_info)


def _finish(cfg, lake, batch_id, base, rows, schema, stager, run_info) -> dict:
    if rows == 0:
        raise NoNewData(
            f"pipeline {cfg.name!r}: batch {batch_id}: {stager.rows_read} rows read, none in the interval "
            f"(event-time column {cfg.event_time_column!r})"
        )
    return staging.write_manifest(lake, batch_id, base, rows, schema, stager.rows_read, run_info)


def _ingest_sql(cfg: PipelineConfig, batch_id: str, lake: Lake, run_info: dict | None, connection: dict | None):
    """A SQL table or query: the interval's rows (by event time) are kept as received, as Parquet in
    ``raw/``, then staged like a Parquet file."""
    src = cfg.source
    start = pd.Timestamp(batch_id)
    frames = sources.read_sql(
        src.uri,
        table=src.table,
        query=src.query,
        event_time_column=cfg.event_time_column,
        start=str(start),
        end=str(start + pd.Timedelta(days=1)),
        chunk_rows=src.chunk_rows,
        connection=connection,
    )
    name = raw.UNSAFE_CHARS.sub("_", src.table or "query") + ".parquet"
    raw_uri = lk.join(lake.partition("raw", batch_id), name)
    rows, _ = lk.write_parquet_tables(raw_uri, (pa.Table.from_pandas(f, preserve_index=False) for f in frames))
    if rows == 0:
        raise NoNewData(f"pipeline {cfg.name!r}: {src.table or 'source.query'} has no rows for batch {batch_id}")
    digest = hashlib.sha256()
    with lk.open_input(raw_uri) as stream:
        for chunk in sources.iter_chunks(stream):
            digest.update(chunk)
    shown = sources.sql_url(src.uri, connection).render_as_string(hide_password=True)
    entry = {"uri": f"{shown}#{src.table or 'query'}", "raw_uri": raw_uri, "sha256": digest.hexdigest(), "rows": rows}
    entry["bytes"] = lk.filesystem(raw_uri)[0].get_file_info(lk.filesystem(raw_uri)[1]).size
    base = {"pipeline": cfg.name, "batch_id": batch_id, "source_uri": shown, "sources": [entry]}
    stager = staging.Stager(cfg, batch_id, select_interval=False)  # the query already selected the interval
    staged_rows, schema = staging.stage_parquet(lake.part("staged", batch_id), raw_uri, stager, src.chunk_rows)
    return _finish(cfg, lake, batch_id, base, staged_rows, schema, stager, run_info)


def ingest_labels(
    cfg: PipelineConfig, batch_id: str, *, lake: Lake | None = None, connection: dict | None = None
) -> dict:
    """Copy the labels that arrived in this interval to ``labels/``; returns {"rows", "uri"} (0 rows if none).

    Label files are small: each is copied to ``raw/`` (as ``labels-<name>``) and parsed in memory.
    """
    lake = lake or Lake(cfg.name)
    if cfg.labels is None:
        return {"rows": 0, "uri": None}
    objects = {o.uri: o for o in sources.list_objects(cfg.labels.uri, connection)}
    files, _ = files_for_batch(list(objects), batch_id)
    frames = []
    for uri in files:
        obj = objects[uri]
        dest = lk.join(lake.partition("raw", batch_id), "labels-" + raw.raw_name(obj.name)[-1])
        entry = raw.copy_raw(obj, dest, True, connection)
        frames.append(parse_bytes(uri, entry["data"], format_of(uri, cfg.labels.format)))
    if not frames:
        return {"rows": 0, "uri": None}
    labels = pd.concat(frames, ignore_index=True)
    missing = [c for c in (cfg.id_column, cfg.target) if c not in labels.columns]
    if missing:
        raise IngestError(f"labels for batch {batch_id}: expected columns {missing}, found {list(labels.columns)}")
    uri = lk.write_parquet(lake.part("labels", batch_id), labels)
    return {"rows": len(labels), "uri": uri}
