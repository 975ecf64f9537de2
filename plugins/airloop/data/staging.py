"""Staging: a batch's parsed rows written as one Parquet part under ``staged/``, and the batch manifest.

In: the raw entries of a batch (from :mod:`airloop.data.raw`; small ones carry their bytes), the pipeline
config and a :class:`Stager` for the batch. Out: (rows, Arrow schema) of the staged part, then the manifest
(``manifests/<batch>.json``: sources with sha256, rows, schema, run, what earlier ingests and validations
said) and the ingest result dict. Small batches are parsed in memory; large ones chunk by chunk into a Parquet
writer whose temporary object is moved into place, so a killed task leaves no half batch, and a rerun replaces
the staged part and the manifest instead of adding rows twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa

from airloop.config import PipelineConfig
from airloop.data.intervals import rows_in_interval
from airloop.data.parse import IngestError, first_line, format_of, parse_bytes, stream_frames
from airloop.store import lake as lk
from airloop.store.lake import BATCH_COLUMN, Lake


class Stager:
    """Turns parsed frames into the staged batch: interval selection, event-time parsing, ``_batch_id``."""

    def __init__(self, cfg: PipelineConfig, batch_id: str, select_interval: bool, history: bool = False):
        self.cfg, self.batch_id, self.select, self.history = cfg, batch_id, select_interval, history
        self.rows_read = 0
        self.schema: pa.Schema | None = None

    def prepare(self, frame: pd.DataFrame, uri: str) -> pd.DataFrame:
        self.rows_read += len(frame)
        col = self.cfg.event_time_column
        if self.select and col:
            frame = rows_in_interval(frame, col, self.batch_id, uri, self.history)
        if col and col in frame.columns:
            frame = frame.assign(**{col: pd.to_datetime(frame[col], errors="coerce")})
        return frame.assign(**{BATCH_COLUMN: self.batch_id})

    def table(self, frame: pd.DataFrame, uri: str) -> pa.Table:
        """An Arrow table of the chunk, conformed to the batch's first chunk (columns and types)."""
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise IngestError(f"{uri}: a column mixes types across rows or files: {first_line(err)}") from None
        if self.schema is None:
            self.schema = table.schema
            return table
        if table.schema.names != self.schema.names:
            raise IngestError(
                f"{uri}: columns {table.schema.names} differ from the batch's first chunk {self.schema.names}; "
                "expected every file of a large batch to share one header"
            )
        try:
            return table.cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise IngestError(f"{uri}: a later chunk does not match the types of the first: {err}") from None


def stage_files(
    cfg: PipelineConfig, staged_uri: str, copied: list[dict], stager: Stager, small: bool
) -> tuple[int, pa.Schema | None]:
    """Parse the raw files of ``copied`` and write the batch's rows to ``staged_uri``; sets each entry's
    "rows". Returns (rows, schema); IngestError when a file cannot be used or no file has a data row."""
    options = cfg.source.options
    if small:  # the daily-file path: parse in memory, concatenate (files may differ in columns)
        frames = []
        for e in copied:
            frame = parse_bytes(e["uri"], e["data"], format_of(e["uri"], cfg.source.format), options)
            e["rows"] = len(frame)
            frames.append(stager.prepare(frame, e["uri"]))
        batch = pd.concat(frames, ignore_index=True)
        _refuse_header_only(stager, copied)
        if batch.empty:
            return 0, None
        return lk.write_parquet_tables(staged_uri, [stager.table(batch, copied[0]["uri"])])

    def tables() -> Iterator[pa.Table]:
        for e in copied:
            fmt = format_of(e["uri"], cfg.source.format)
            before = stager.rows_read
            for frame in stream_frames(e["uri"], e["raw_uri"], fmt, options, cfg.source.chunk_rows):
                frame = stager.prepare(frame, e["uri"])
                if len(frame):
                    yield stager.table(frame, e["uri"])
            e["rows"] = stager.rows_read - before
        _refuse_header_only(stager, copied)

    return lk.write_parquet_tables(staged_uri, tables())


def stage_parquet(staged_uri: str, raw_uri: str, stager: Stager, chunk_rows: int) -> tuple[int, pa.Schema | None]:
    """Stage a raw Parquet object (a SQL source's rows as received) chunk by chunk; returns (rows, schema)."""

    def tables() -> Iterator[pa.Table]:
        for frame in stream_frames(raw_uri, raw_uri, "parquet", {}, chunk_rows):
            yield stager.table(stager.prepare(frame, raw_uri), raw_uri)

    return lk.write_parquet_tables(staged_uri, tables())


def _refuse_header_only(stager: Stager, copied: list[dict]) -> None:
    if stager.rows_read == 0:
        names = ", ".join(e["uri"] for e in copied)
        raise IngestError(f"{names}: has a header but no data rows; expected at least one row")


def _now() -> dict:
    return {"ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def _carried(manifest_uri: str) -> dict:
    """What a re-ingest keeps of the batch's earlier manifest: every validation verdict (the last one joins
    ``validation_history``: it judged the bytes received before) and the earlier ingests (``ingest_history``)."""
    if not lk.exists(manifest_uri):
        return {}
    old = lk.read_json(manifest_uri)
    verdicts = list(old.get("validation_history", []))
    if old.get("validation"):
        verdicts.append(old["validation"])
    ingests = list(old.get("ingest_history", []))
    if old.get("ingested_at"):
        keep = ("ingested_at", "rows", "rows_read", "sources", "ingest_error", "run")
        ingests.append({k: old[k] for k in keep if k in old})
    carried = {"validation_history": verdicts} if verdicts else {}
    return {**carried, "ingest_history": ingests} if ingests else carried


def record_ingest_error(manifest_uri: str, base: dict, err: IngestError, run_info: dict | None) -> None:
    """Write the manifest of a batch whose files could not be used: its sources, history and the error."""
    manifest = {**base, **_carried(manifest_uri), "ingest_error": str(err), "run": run_info or {}, **_now()}
    lk.write_json(manifest_uri, manifest)


def write_manifest(
    lake: Lake, batch_id: str, base: dict, rows: int, schema: pa.Schema, rows_read: int, run_info: dict | None
) -> dict:
    """Write the manifest of a staged batch; returns the ingest result (see
    :func:`airloop.data.ingest.ingest_batch`). ``base`` is {"pipeline", "batch_id", "source_uri", "sources"}."""
    staged_uri = lake.part("staged", batch_id)
    manifest = {
        **base,
        **_carried(lake.manifest(batch_id)),
        "rows": rows,
        "rows_read": rows_read,
        "schema": {f.name: str(f.type) for f in schema},
        "staged_uri": staged_uri,
        "run": run_info or {},
        **_now(),
    }
    manifest_uri = lk.write_json(lake.manifest(batch_id), manifest)
    total = sum(s.get("bytes") or 0 for s in base["sources"])
    return {
        "batch_id": batch_id,
        "rows": rows,
        "files": len(base["sources"]),
        "bytes": total,
        "staged_uri": staged_uri,
        "manifest_uri": manifest_uri,
        "summary": (
            f"Read {len(base['sources'])} source object(s), {total} bytes, from {base['source_uri']}; kept them "
            f"under {lake.partition('raw', batch_id)}; staged {rows} rows at {staged_uri}"
        ),
    }
