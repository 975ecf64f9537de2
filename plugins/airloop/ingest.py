"""Ingestion: copy one data interval's source files into the lake, as received, and stage them as Parquet.

A batch is the data interval starting on ``batch_id`` (a date). Files whose names carry a date are
partitioned by it (``churn_2026-01-05.csv`` belongs to batch 2026-01-05); otherwise every file is read and
rows are selected by the event-time column. Raw bytes are always kept under ``raw/``; a rerun replaces the
staged batch and the manifest, it never adds rows twice.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import io
import re
from pathlib import PurePosixPath
from urllib.parse import urlparse

import pandas as pd

from airloop import lake as lk
from airloop.config import PipelineConfig
from airloop.datasets import BATCH_COLUMN
from airloop.errors import BadInput, NothingToDo
from airloop.lake import Lake

DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")


class IngestError(BadInput):
    """A source file that cannot be read; the message names the file and what was wrong."""


class NoNewData(NothingToDo):
    """The data interval has no source files (yet)."""


def list_source_files(uri: str) -> list[str]:
    """URIs of the files matching a source URI with an optional glob in its last segment."""
    parsed = urlparse(uri)
    base, _, pattern = uri.rpartition("/")
    if not any(ch in pattern for ch in "*?["):
        base, pattern = uri.rstrip("/"), "*"
        if lk.exists(uri):
            fs, path = lk.filesystem(uri)
            if fs.get_file_info(path).is_file:
                return [uri]
    if parsed.scheme not in ("", "file", "s3"):
        raise IngestError(f"source uri {uri!r}: expected a file:// or s3:// URI, found scheme {parsed.scheme!r}")
    return [u for u in lk.list_uris(base, recursive=False) if fnmatch.fnmatch(u.rsplit("/", 1)[1], pattern)]


def files_for_batch(files: list[str], batch_id: str) -> tuple[list[str], bool]:
    """Select the files of one batch; returns (files, partitioned_by_name)."""
    dated = {f: DATE_IN_NAME.search(f.rsplit("/", 1)[1]) for f in files}
    if any(dated.values()):
        return [f for f, m in dated.items() if m and m.group(1) == batch_id], True
    return files, False


def _format_of(uri: str, declared: str | None) -> str:
    if declared:
        return declared
    suffix = PurePosixPath(urlparse(uri).path).suffix.lower()
    formats = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix not in formats:
        raise IngestError(f"{uri}: cannot tell the format from extension {suffix!r}; set source.format")
    return formats[suffix]


def parse_bytes(uri: str, data: bytes, fmt: str, options: dict | None = None) -> pd.DataFrame:
    """Parse one file's bytes into a frame, with an error that names the file and the problem."""
    options = options or {}
    if not data.strip():
        raise IngestError(f"{uri}: the file is empty (0 data bytes); expected a {fmt} file with a header")
    try:
        if fmt == "csv":
            data.decode("utf-8")
            frame = pd.read_csv(io.BytesIO(data), **options)
            if frame.shape[1] == 1 and any(d in data[:4096].decode("utf-8") for d in (";", "\t", "|")):
                raise IngestError(
                    f"{uri}: found a single column {frame.columns[0]!r}; expected comma-separated values "
                    "(set source.options.sep for another delimiter)"
                )
        elif fmt == "parquet":
            frame = pd.read_parquet(io.BytesIO(data))
        else:
            data.decode("utf-8")
            frame = pd.read_json(io.BytesIO(data), lines=True, **options)
    except UnicodeDecodeError as err:
        raise IngestError(
            f"{uri}: expected UTF-8 text, found byte {data[err.start]:#04x} at offset {err.start}"
        ) from None
    except IngestError:
        raise
    except Exception as err:  # the parsers raise many types; the user needs the file and the reason
        raise IngestError(f"{uri}: cannot be parsed as {fmt}: {err}") from None
    return frame


def _select_interval(cfg: PipelineConfig, frame: pd.DataFrame, batch_id: str, uri: str) -> pd.DataFrame:
    col = cfg.event_time_column
    if col not in frame.columns:
        raise IngestError(f"{uri}: event-time column {col!r} is missing (found {sorted(map(str, frame.columns))})")
    start = pd.Timestamp(batch_id)
    times = pd.to_datetime(frame[col], errors="coerce")
    return frame[(times >= start) & (times < start + pd.Timedelta(days=1))]


def ingest_batch(cfg: PipelineConfig, batch_id: str, *, lake: Lake | None = None, run_info: dict | None = None) -> dict:
    """Copy the batch's source files to ``raw/``, stage them as Parquet and write the manifest.

    Returns {"batch_id", "rows", "files", "staged_uri", "manifest_uri"}; raises NoNewData when the interval
    has no files and IngestError when a file cannot be used (its raw bytes are kept all the same).
    """
    lake = lake or Lake(cfg.name)
    lk.check_batch_id(batch_id)
    files, by_name = files_for_batch(list_source_files(cfg.source.uri), batch_id)
    if not files:
        raise NoNewData(f"pipeline {cfg.name!r}: no source files for batch {batch_id} under {cfg.source.uri}")
    frames, sources = [], []
    for uri in files:
        data = lk.read_bytes(uri)
        name = uri.rsplit("/", 1)[1]
        raw_uri = lk.write_bytes(lk.join(lake.partition("raw", batch_id), name), data)
        frame = parse_bytes(uri, data, _format_of(uri, cfg.source.format), cfg.source.options)
        if not by_name and cfg.event_time_column:
            frame = _select_interval(cfg, frame, batch_id, uri)
        frames.append(frame)
        sources.append(
            {
                "uri": uri,
                "raw_uri": raw_uri,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "rows": len(frame),
            }
        )
    batch = pd.concat(frames, ignore_index=True)
    if cfg.event_time_column and cfg.event_time_column in batch.columns:
        batch[cfg.event_time_column] = pd.to_datetime(batch[cfg.event_time_column], errors="coerce")
    batch[BATCH_COLUMN] = batch_id
    staged_uri = lk.write_parquet(lake.part("staged", batch_id), batch)
    manifest = {
        "pipeline": cfg.name,
        "batch_id": batch_id,
        "sources": sources,
        "rows": len(batch),
        "schema": {str(c): str(t) for c, t in batch.dtypes.items()},
        "staged_uri": staged_uri,
        "run": run_info or {},
        "ingested_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    manifest_uri = lk.write_json(lake.manifest(batch_id), manifest)
    return {
        "batch_id": batch_id,
        "rows": len(batch),
        "files": len(files),
        "staged_uri": staged_uri,
        "manifest_uri": manifest_uri,
    }


def ingest_labels(cfg: PipelineConfig, batch_id: str, *, lake: Lake | None = None) -> dict:
    """Copy the labels that arrived in this interval to ``labels/``; returns {"rows", "uri"} (0 rows if none)."""
    lake = lake or Lake(cfg.name)
    if cfg.labels is None:
        return {"rows": 0, "uri": None}
    files, _ = files_for_batch(list_source_files(cfg.labels.uri), batch_id)
    frames = []
    for uri in files:
        data = lk.read_bytes(uri)
        lk.write_bytes(lk.join(lake.partition("raw", batch_id), "labels-" + uri.rsplit("/", 1)[1]), data)
        frames.append(parse_bytes(uri, data, _format_of(uri, cfg.labels.format)))
    if not frames:
        return {"rows": 0, "uri": None}
    labels = pd.concat(frames, ignore_index=True)
    missing = [c for c in (cfg.id_column, cfg.target) if c not in labels.columns]
    if missing:
        raise IngestError(f"labels for batch {batch_id}: expected columns {missing}, found {list(labels.columns)}")
    uri = lk.write_parquet(lake.part("labels", batch_id), labels)
    return {"rows": len(labels), "uri": uri}
