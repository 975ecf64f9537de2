"""Ingestion: copy one data interval's source data into the lake as received, and stage it as Parquet.

A batch is the data interval starting on ``batch_id`` (a date). Sources are files or objects (``file://``,
``s3://``; CSV, Parquet, JSON Lines; globs and partitioned folders) or a SQL table or query
(``postgresql://``). Files whose name or partition folder carries a date (``churn_2026-01-05.csv``,
``date=2026-01-05/part.csv``) belong to that day's batch; otherwise rows are selected by the event-time column.

Raw bytes are always kept under ``raw/`` (streamed, never read whole into memory), also when parsing fails.
Large files are parsed in chunks into a Parquet writer whose temporary object is moved into place, so a
killed task leaves no half batch; a rerun replaces the staged batch and the manifest, never adds rows twice.

One concern, kept whole past ~400 lines: every step (select files, copy raw, parse, stage, manifest) serves
the one path from a source to ``staged/``, and the labels feed and SQL sources take the same path. Reading
sources is :mod:`airloop.data.sources`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa

from airloop.config import PipelineConfig
from airloop.data import sources
from airloop.errors import BadInput, NothingToDo
from airloop.store import lake as lk
from airloop.store.lake import BATCH_COLUMN, DATE_IN_TEXT, Lake

DATE_IN_NAME = DATE_IN_TEXT
SMALL_BATCH_BYTES = 64 << 20  # below this a batch is parsed in memory with pandas (fast for daily files)
# pyarrow's streaming CSV reader parses ahead of its consumer by dozens of blocks: small blocks keep that
# bounded (measured on 10M rows: 16 MiB blocks peak at ~890 MiB RSS, 1 MiB blocks at ~250 MiB, same speed).
# Blocks are then gathered into chunks of ``source.chunk_rows`` rows, so Parquet row groups stay large.
STREAM_BLOCK_BYTES = 1 << 20
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.=-]")

log = logging.getLogger(__name__)


class IngestError(BadInput):
    """A source file that cannot be read; the message names the file and what was wrong."""


class NoNewData(NothingToDo):
    """The data interval has no source files or rows (yet)."""


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
        fmt = _format_of(obj.uri, cfg.source.format)
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


def _format_of(uri: str, declared: str | None) -> str:
    if declared:
        return declared
    suffix = PurePosixPath(urlparse(uri).path).suffix.lower()
    formats = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix not in formats:
        raise IngestError(f"{uri}: cannot tell the format from extension {suffix!r}; set source.format")
    return formats[suffix]


def _check_delimiter(uri: str, frame: pd.DataFrame, head: str) -> None:
    if frame.shape[1] == 1 and any(d in head for d in (";", "\t", "|")):
        raise IngestError(
            f"{uri}: found a single column {frame.columns[0]!r}; expected comma-separated values "
            "(set source.options.sep for another delimiter)"
        )


def _refuse_duplicate_header(uri: str, names: list[str]) -> None:
    """IngestError naming the repeated column(s): pandas would silently rename the second ``a`` to ``a.1``
    and train on it as a feature of its own."""
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        seen.setdefault(str(name).strip(), []).append(i + 1)
    repeated = {n: pos for n, pos in seen.items() if len(pos) > 1}
    if repeated:
        shown = ", ".join(f"{n!r} at columns {pos}" for n, pos in repeated.items())
        share = sum(len(p) for p in repeated.values()) / max(len(names), 1)
        raise IngestError(
            f"{uri}: duplicated header: {shown} ({share:.0%} of the {len(names)} columns); expected each column "
            "name once. Rename them at the source, or declare the names you intend with source.options "
            "{names: [...], header: 0}"
        )


def _csv_header(head: bytes, options: dict) -> list[str]:
    import csv

    sep = options.get("sep") or options.get("delimiter") or ","
    line = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()[:1]
    return next(csv.reader(line, delimiter=sep), []) if line and len(sep) == 1 else []


def parse_bytes(uri: str, data: bytes, fmt: str, options: dict | None = None) -> pd.DataFrame:
    """Parse one file's bytes into a frame, with an error that names the file and the problem."""
    options = options or {}
    if not data.strip():
        raise IngestError(f"{uri}: the file is empty (0 data bytes); expected a {fmt} file with a header")
    try:
        if fmt == "csv":
            data.decode("utf-8")
            if "names" not in options and options.get("header", 0) == 0:
                _refuse_duplicate_header(uri, _csv_header(data[:65536], options))
            frame = pd.read_csv(io.BytesIO(data), **options)
            _check_delimiter(uri, frame, data[:4096].decode("utf-8", errors="replace"))
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
        raise IngestError(f"{uri}: cannot be parsed as {fmt}: {_first_line(err)}") from None
    return frame


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _stream_frames(uri: str, raw_uri: str, fmt: str, options: dict, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Frames of a large raw file, chunk by chunk (memory stays at one chunk); errors name the source file."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        with lk.open_input(raw_uri, random_access=fmt == "parquet") as stream:
            if fmt == "parquet":
                for batch in pq.ParquetFile(stream).iter_batches(batch_size=chunk_rows):
                    yield batch.to_pandas()
            elif fmt == "csv" and set(options) <= {"sep", "delimiter"}:
                delimiter = options.get("sep") or options.get("delimiter") or ","
                reader = pcsv.open_csv(
                    stream,
                    read_options=pcsv.ReadOptions(block_size=STREAM_BLOCK_BYTES),
                    parse_options=pcsv.ParseOptions(delimiter=delimiter),
                )
                for i, table in enumerate(_gathered(reader, chunk_rows)):
                    frame = table.to_pandas()
                    if i == 0:
                        _refuse_duplicate_header(uri, list(table.column_names))
                        _check_delimiter(uri, frame, ",".join(map(str, frame.columns)))
                    yield frame
            elif fmt == "csv":
                yield from pd.read_csv(stream, chunksize=chunk_rows, **options)
            else:
                yield from pd.read_json(stream, lines=True, chunksize=chunk_rows, **options)
    except (IngestError, lk.LakeError):
        raise
    except UnicodeDecodeError as err:
        raise IngestError(f"{uri}: expected UTF-8 text, found byte {err.object[err.start]:#04x}") from None
    except Exception as err:
        message = _first_line(err)
        if "UTF8" in message or "utf-8" in message.lower():
            raise IngestError(f"{uri}: expected UTF-8 text, found invalid bytes ({message})") from None
        if not message.strip() or "Empty CSV file" in message:
            raise IngestError(f"{uri}: the file is empty (0 data bytes); expected a {fmt} file") from None
        raise IngestError(f"{uri}: cannot be parsed as {fmt}: {message}") from None


def _gathered(reader: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Record batches gathered into tables of at least ``rows`` rows (the last one may be smaller)."""
    buffer: list[pa.RecordBatch] = []
    count = 0
    for batch in reader:
        buffer.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(buffer)
            buffer, count = [], 0
    if buffer:
        yield pa.Table.from_batches(buffer)


def raw_name(relative: str) -> list[str]:
    """Lake path segments for a source object's relative path; ``..`` (escaping the lake) is refused and
    other unusual characters become ``_``."""
    segs = [s for s in relative.split("/") if s not in ("",)]
    if not segs or any(s in (".", "..") for s in segs):
        raise lk.LakeError(
            f"source object key {relative!r}: expected a path inside the source prefix, found a '..' or '.' "
            "segment that would escape the lake; nothing was copied"
        )
    return [_safe_segment(s) for s in segs]


def _safe_segment(segment: str) -> str:
    """``segment`` itself when every character is safe; else the unsafe ones as ``_`` plus ``--`` and 8 hex
    of the sha256 of the original, before the extension, so ``a b.csv`` and ``a_b.csv`` cannot collide."""
    safe = _UNSAFE_CHARS.sub("_", segment)
    if safe == segment:
        return segment
    tag = hashlib.sha256(segment.encode()).hexdigest()[:8]
    stem, dot, ext = safe.rpartition(".")
    return f"{stem}--{tag}.{ext}" if dot and stem else f"{safe}--{tag}"


def _refuse_collisions(chosen: list[sources.SourceObject], dests: list[str]) -> None:
    """LakeError (nothing copied) if two source objects would land on one raw name: one's bytes would be lost."""
    seen: dict[str, str] = {}
    for obj, dest in zip(chosen, dests, strict=True):
        if dest in seen:
            raise lk.LakeError(
                f"source objects {seen[dest]!r} and {obj.uri!r}: both map to raw name {dest!r}; expected distinct "
                "names, so nothing was copied (rename one of them)"
            )
        seen[dest] = obj.uri


def _copy_raw(obj: sources.SourceObject, dest: str, keep_bytes: bool, connection: dict | None) -> dict:
    """Stream one source object to ``dest`` (atomic); returns its manifest entry (and its bytes if small)."""
    kept: list[bytes] = []

    def chunks(stream) -> Iterator[bytes]:
        for chunk in sources.iter_chunks(stream):
            if keep_bytes:
                kept.append(chunk)
            yield chunk

    with sources.open_object(obj.uri, connection) as stream:
        _, sha, size = lk.write_stream(dest, chunks(stream))
    return {
        "uri": obj.uri,
        "raw_uri": dest,
        "sha256": sha,
        "bytes": size,
        "data": b"".join(kept) if keep_bytes else None,
    }


def _keep_superseded(raw_uri: str, sha256: str | None, previous: dict) -> None:
    """A rerun whose source bytes changed keeps the bytes received before next to the new ones."""
    old = next((s for s in previous.get("sources", []) if s.get("raw_uri") == raw_uri), None)
    if old and sha256 and old.get("sha256") != sha256 and lk.exists(raw_uri):
        lk.move(raw_uri, f"{raw_uri}.superseded-{old['sha256'][:12]}")


class _Stager:
    """Turns parsed frames into the staged batch: interval selection, event-time parsing, ``_batch_id``."""

    def __init__(self, cfg: PipelineConfig, batch_id: str, select_interval: bool, history: bool = False):
        self.cfg, self.batch_id, self.select, self.history = cfg, batch_id, select_interval, history
        self.rows_read = 0
        self.schema: pa.Schema | None = None

    def prepare(self, frame: pd.DataFrame, uri: str) -> pd.DataFrame:
        self.rows_read += len(frame)
        col = self.cfg.event_time_column
        if self.select and col:
            if col not in frame.columns:
                found = sorted(map(str, frame.columns))
                raise IngestError(f"{uri}: event-time column {col!r} is missing (found {found})")
            start = pd.Timestamp(self.batch_id)
            times = pd.to_datetime(frame[col], errors="coerce")
            end = times < start + pd.Timedelta(days=1)
            frame = frame[end if self.history else (times >= start) & end]
        if col and col in frame.columns:
            frame = frame.assign(**{col: pd.to_datetime(frame[col], errors="coerce")})
        return frame.assign(**{BATCH_COLUMN: self.batch_id})

    def table(self, frame: pd.DataFrame, uri: str) -> pa.Table:
        """An Arrow table of the chunk, conformed to the batch's first chunk (columns and types)."""
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise IngestError(f"{uri}: a column mixes types across rows or files: {_first_line(err)}") from None
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
    dests = [lk.join(partition, *raw_name(o.relative)) for o in chosen]
    _refuse_collisions(chosen, dests)
    small = sum(o.size or 0 for o in chosen) <= SMALL_BATCH_BYTES
    manifest_uri = lake.manifest(batch_id)
    previous = lk.read_json(manifest_uri) if lk.exists(manifest_uri) else {}
    copied = []
    for obj, dest in zip(chosen, dests, strict=True):
        # Straight to the raw name when nothing is there (the usual first ingest: no second copy of a large
        # file); a rerun copies beside it first, to keep the earlier bytes if they differ.
        landing = dest + ".incoming" if lk.exists(dest) else dest
        entry = _copy_raw(obj, landing, small, connection)
        if landing != dest:
            _keep_superseded(dest, entry["sha256"], previous)
            lk.move(landing, dest)
        entry["raw_uri"] = dest
        copied.append(entry)
    sources_meta = [{k: v for k, v in e.items() if k != "data"} for e in copied]
    base = {"pipeline": cfg.name, "batch_id": batch_id, "source_uri": cfg.source.uri, "sources": sources_meta}
    stager = _Stager(cfg, batch_id, select_interval=not by_name, history=history)
    try:
        rows, schema = _stage(cfg, lake.part("staged", batch_id), copied, stager, small)
    except IngestError as err:
        manifest = {**base, **_carried(manifest_uri), "ingest_error": str(err), "run": run_info or {}, **_now()}
        lk.write_json(manifest_uri, manifest)
        raise
    return _finish(cfg, lake, batch_id, base, rows, schema, stager, run_info)


def _stage(cfg: PipelineConfig, staged_uri: str, copied: list[dict], stager: _Stager, small: bool):
    options = cfg.source.options
    if small:  # the daily-file path: parse in memory, concatenate (files may differ in columns)
        frames = []
        for e in copied:
            frame = parse_bytes(e["uri"], e["data"], _format_of(e["uri"], cfg.source.format), options)
            e["rows"] = len(frame)
            frames.append(stager.prepare(frame, e["uri"]))
        batch = pd.concat(frames, ignore_index=True)
        _refuse_header_only(stager, copied)
        if batch.empty:
            return 0, None
        return lk.write_parquet_tables(staged_uri, [stager.table(batch, copied[0]["uri"])])

    def tables() -> Iterator[pa.Table]:
        for e in copied:
            fmt = _format_of(e["uri"], cfg.source.format)
            before = stager.rows_read
            for frame in _stream_frames(e["uri"], e["raw_uri"], fmt, options, cfg.source.chunk_rows):
                frame = stager.prepare(frame, e["uri"])
                if len(frame):
                    yield stager.table(frame, e["uri"])
            e["rows"] = stager.rows_read - before
        _refuse_header_only(stager, copied)

    return lk.write_parquet_tables(staged_uri, tables())


def _refuse_header_only(stager: _Stager, copied: list[dict]) -> None:
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


def _finish(cfg, lake, batch_id, base, rows, schema, stager, run_info) -> dict:
    if rows == 0:
        raise NoNewData(
            f"pipeline {cfg.name!r}: batch {batch_id}: {stager.rows_read} rows read, none in the interval "
            f"(event-time column {cfg.event_time_column!r})"
        )
    staged_uri = lake.part("staged", batch_id)
    manifest = {
        **base,
        **_carried(lake.manifest(batch_id)),
        "rows": rows,
        "rows_read": stager.rows_read,
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
    name = _UNSAFE_CHARS.sub("_", src.table or "query") + ".parquet"
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
    stager = _Stager(cfg, batch_id, select_interval=False)  # the query already selected the interval

    def tables() -> Iterable[pa.Table]:
        for frame in _stream_frames(raw_uri, raw_uri, "parquet", {}, src.chunk_rows):
            yield stager.table(stager.prepare(frame, raw_uri), raw_uri)

    staged_rows, schema = lk.write_parquet_tables(lake.part("staged", batch_id), tables())
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
        dest = lk.join(lake.partition("raw", batch_id), "labels-" + raw_name(obj.name)[-1])
        entry = _copy_raw(obj, dest, True, connection)
        frames.append(parse_bytes(uri, entry["data"], _format_of(uri, cfg.labels.format)))
    if not frames:
        return {"rows": 0, "uri": None}
    labels = pd.concat(frames, ignore_index=True)
    missing = [c for c in (cfg.id_column, cfg.target) if c not in labels.columns]
    if missing:
        raise IngestError(f"labels for batch {batch_id}: expected columns {missing}, found {list(labels.columns)}")
    uri = lk.write_parquet(lake.part("labels", batch_id), labels)
    return {"rows": len(labels), "uri": uri}
