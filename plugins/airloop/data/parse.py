"""Parsing source files: one file's bytes, or a large raw file chunk by chunk, into pandas frames.

In: a file's URI (for messages), its bytes or its raw copy's URI, its format (``csv``, ``parquet``, ``jsonl``)
and ``source.options`` (passed to the pandas reader). Out: a frame, or an iterator of frames for a large file.
Every failure is an :class:`IngestError` naming the file and what was wrong (empty, not UTF-8, one column
where a delimiter was expected, a duplicated header, unparseable). Used by :mod:`airloop.data.ingest` and
:mod:`airloop.data.suggest`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa

from airloop.errors import BadInput
from airloop.store import lake as lk

# pyarrow's streaming CSV reader parses ahead of its consumer by dozens of blocks: small blocks keep that
# bounded (measured on 10M rows: 16 MiB blocks peak at ~890 MiB RSS, 1 MiB blocks at ~250 MiB, same speed).
# Blocks are then gathered into chunks of ``source.chunk_rows`` rows, so Parquet row groups stay large.
STREAM_BLOCK_BYTES = 1 << 20


class IngestError(BadInput):
    """A source file that cannot be read; the message names the file and what was wrong."""


def format_of(uri: str, declared: str | None) -> str:
    """The declared format, else the one the file's extension names; IngestError when neither tells."""
    if declared:
        return declared
    suffix = PurePosixPath(urlparse(uri).path).suffix.lower()
    formats = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix not in formats:
        raise IngestError(f"{uri}: cannot tell the format from extension {suffix!r}; set source.format")
    return formats[suffix]


def first_line(err: Exception) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


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
        raise IngestError(f"{uri}: cannot be parsed as {fmt}: {first_line(err)}") from None
    return frame


def stream_frames(uri: str, raw_uri: str, fmt: str, options: dict, chunk_rows: int) -> Iterator[pd.DataFrame]:
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
        message = first_line(err)
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
