"""The data lake, addressed by URI (``file://`` on one machine, ``s3://`` in a cluster).

Layout per pipeline, partitioned by batch (the data interval's start date)::

    {lake}/{pipeline}/raw/date={batch}/...            bytes as received, always kept
    {lake}/{pipeline}/staged/date={batch}/part-0.parquet
    {lake}/{pipeline}/validated/date={batch}/part-0.parquet
    {lake}/{pipeline}/quarantine/date={batch}/part-0.parquet
    {lake}/{pipeline}/labels/date={batch}/part-0.parquet
    {lake}/{pipeline}/predictions/date={batch}/part-0.parquet
    {lake}/{pipeline}/review/date={day}/part-*.parquet          served predictions queued for review
    {lake}/{pipeline}/review_labels/date={day}/part-*.parquet   reviewers' labels for them
    {lake}/{pipeline}/manifests/{batch}.json
    {lake}/{pipeline}/reports/...

Writes are atomic: the object is written under a temporary name and then moved into place, so a killed
task never leaves half a batch, and a rerun replaces its output instead of adding to it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from airloop.errors import BadInput, NothingToDo

if TYPE_CHECKING:  # pandas loads on first use: `airloop status` reads only JSON and must answer fast
    import pandas as pd

DATE = r"\d{4}-\d{2}-\d{2}"  # a batch id is the start date of its data interval
BATCH_ID_PATTERN = re.compile(rf"^{DATE}$")
DATE_IN_TEXT = re.compile(rf"({DATE})")  # the first date in a file name or path
BATCH_COLUMN = "_batch_id"  # every staged, validated and scored row carries its batch id
REVIEW_QUEUE_ZONE = "review"  # written by airloop.serving.review, read back as training data by airloop.data.labels
REVIEW_LABELS_ZONE = "review_labels"
_SEGMENT_PATTERN = re.compile(r"^[A-Za-z0-9_.=-]+$")


class LakeError(BadInput):
    """A lake path or object that cannot be used; the message names the URI."""


def check_batch_id(batch_id: str) -> str:
    """A batch id is the data interval's start date, ``YYYY-MM-DD``; anything else (``../``) is refused."""
    if not isinstance(batch_id, str) or not BATCH_ID_PATTERN.match(batch_id):
        raise LakeError(f"batch id: expected a date like 2026-01-31, found {batch_id!r}")
    return batch_id


def join(base: str, *parts: str) -> str:
    """Join path segments onto a URI, refusing segments that could escape it (``..``, ``/``)."""
    out = base.rstrip("/")
    for part in parts:
        for seg in str(part).strip("/").split("/"):
            if seg in ("", ".", "..") or not _SEGMENT_PATTERN.match(seg):
                raise LakeError(f"lake path segment {seg!r} in {part!r}: expected letters, digits, '._=-' only")
            out = f"{out}/{seg}"
    return out


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path for a ``file://`` or ``s3://`` URI.

    S3 endpoint and credentials come from the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...).
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme else uri
        return pafs.LocalFileSystem(), path
    if parsed.scheme == "s3":
        import os

        kwargs: dict[str, Any] = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            ep = urlparse(endpoint)
            kwargs["endpoint_override"] = ep.netloc or ep.path
            kwargs["scheme"] = ep.scheme or "http"
        kwargs["region"] = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        fs = pafs.S3FileSystem(**kwargs)
        return fs, f"{parsed.netloc}{parsed.path}"
    raise LakeError(f"{uri}: expected a file:// or s3:// URI, found scheme {parsed.scheme!r}")


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _ensure_parent(fs: pafs.FileSystem, path: str) -> None:
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.create_dir(parent, recursive=True)


def write_bytes(uri: str, data: bytes) -> str:
    """Write bytes atomically (temporary object, then move); returns the URI."""
    if _is_s3(uri):  # one PUT is atomic on S3
        from airloop.store import s3

        s3.write_stream(uri, [data])
        return uri
    fs, path = filesystem(uri)
    _ensure_parent(fs, path)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)
    return uri


def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def move(src_uri: str, dst_uri: str) -> None:
    """Move one object within the lake (on S3 a managed multipart copy, so large objects move too)."""
    if _is_s3(src_uri) and _is_s3(dst_uri):
        from airloop.store import s3

        s3.move(src_uri, dst_uri)
        return
    fs, src = filesystem(src_uri)
    fs.move(src, filesystem(dst_uri)[1])


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise LakeError(f"{uri}: no such object in the lake") from None


def write_json(uri: str, obj: Any) -> str:
    return write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_parquet(uri: str, frame: pd.DataFrame) -> str:
    """Write a frame as one Parquet object, atomically; returns the URI."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return write_bytes(uri, buf.getvalue())


def read_parquet(uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    fs, path = filesystem(uri)
    try:
        return pq.read_table(path, filesystem=fs, columns=columns).to_pandas()
    except FileNotFoundError:
        raise LakeError(f"{uri}: no such object in the lake") from None


def delete(uri: str) -> None:
    """Remove an object or a folder; missing is fine (reruns call this to replace their output)."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def list_uris(prefix_uri: str, recursive: bool = True) -> list[str]:
    """URIs of the files under a prefix, sorted; an absent prefix gives an empty list."""
    fs, path = filesystem(prefix_uri)
    selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    scheme = urlparse(prefix_uri).scheme or "file"
    out = []
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File and ".tmp-" not in info.path:
            out.append(f"file://{info.path}" if scheme == "file" else f"{scheme}://{info.path}")
    return sorted(out)


class BatchMissing(NothingToDo):
    """A stage was asked for a batch that has no data where it reads (a date without data, or a quarantined
    batch): there is nothing to do for that date."""


_TEMPORARY = re.compile(r"(\.tmp-[0-9a-f]{32}|\.incoming)$")


def temporaries(prefix_uri: str) -> list[str]:
    """URIs of the temporary objects under a prefix (``*.tmp-<uuid>`` of an atomic write, ``*.incoming`` of
    a raw copy): only a killed writer leaves them behind."""
    fs, path = filesystem(prefix_uri)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    scheme = urlparse(prefix_uri).scheme or "file"
    return sorted(
        f"{scheme}://{info.path}"
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File and _TEMPORARY.search(info.path)
    )


def clean_temporaries(prefix_uri: str) -> list[str]:
    """Delete what :func:`temporaries` lists (call before rewriting a partition that one writer owns, such as
    a batch's ``raw/`` on the batch's ingest); returns the URIs deleted."""
    gone = temporaries(prefix_uri)
    for uri in gone:
        with contextlib.suppress(FileNotFoundError):
            fs, path = filesystem(uri)
            fs.delete_file(path)
    if _is_s3(prefix_uri):  # a killed multipart upload leaves invisible parts: abort them
        from airloop.store import s3

        gone += [f"s3://{s3.split(prefix_uri)[0]}/{key} (pending upload)" for key in s3.clean_uploads(prefix_uri)]
    return gone


class Lake:
    """The lake paths of one pipeline."""

    def __init__(self, pipeline: str, root: str | None = None):
        from airloop.settings import lake_uri

        self.pipeline = pipeline
        self.root = join(root or lake_uri(), pipeline)

    def zone(self, zone: str) -> str:
        return join(self.root, zone)

    def partition(self, zone: str, batch_id: str) -> str:
        return join(self.root, zone, f"date={check_batch_id(batch_id)}")

    def part(self, zone: str, batch_id: str) -> str:
        return join(self.partition(zone, batch_id), "part-0.parquet")

    def require_part(self, zone: str, batch_id: str, stage: str) -> str:
        """The URI of the batch's part in ``zone`` ("staged" or "validated"); raises :class:`BatchMissing`
        with a one-line reason (no internal path) when it is not there."""
        uri = self.part(zone, batch_id)
        if exists(uri):
            return uri
        head = f"pipeline {self.pipeline!r}, batch {batch_id}: nothing to {stage}"
        if exists(self.part("quarantine", batch_id)):
            raise BatchMissing(f"{head}: the batch is quarantined (see its validate run)")
        if zone == "validated" and exists(self.part("staged", batch_id)):
            raise BatchMissing(f"{head}: the batch is ingested but not validated yet")
        raise BatchMissing(f"{head}: no data was ingested for that date")

    def prediction_part(self, batch_id: str, model_version: str) -> str:
        """Where model version ``model_version`` wrote its predictions of a batch. Predictions are immutable:
        scoring a batch again with another version writes beside, never over (``version=N/``)."""
        return join(self.partition("predictions", batch_id), f"version={model_version}", "part-0.parquet")

    def prediction_parts(self, batch_id: str) -> list[str]:
        """Every predictions file of a batch, one per model version that scored it (and the single
        ``part-0.parquet`` of lakes written before predictions were versioned)."""
        return [u for u in list_uris(self.partition("predictions", batch_id)) if u.endswith(".parquet")]

    def manifest(self, batch_id: str) -> str:
        return join(self.root, "manifests", f"{check_batch_id(batch_id)}.json")

    def report(self, *parts: str) -> str:
        return join(self.root, "reports", *parts)

    def batches(self, zone: str) -> list[str]:
        """Batch ids present in a zone, oldest first."""
        ids = set()
        for uri in list_uris(self.zone(zone)):
            m = re.search(rf"/date=({DATE})/", uri)
            if m:
                ids.add(m.group(1))
        return sorted(ids)

    def read_zone(self, zone: str, batch_ids: list[str] | None = None) -> pd.DataFrame:
        """All parts of the given batches in a zone, concatenated; an empty frame when there are none."""
        import pandas as pd

        ids = batch_ids if batch_ids is not None else self.batches(zone)
        if zone == "predictions":
            frames = [read_parquet(u) for b in ids for u in self.prediction_parts(b)]
        else:
            frames = [read_parquet(self.part(zone, b)) for b in ids if exists(self.part(zone, b))]
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)


# --- streaming writes (ingestion of large inputs) ------------------------------------------------------------


def write_stream(uri: str, chunks: Iterable[bytes]) -> tuple[str, str, int]:
    """Write byte chunks atomically without holding them all; returns (uri, sha256 hex, byte count).

    A failure part-way (a dropped connection, a killed task) removes the temporary object: nothing half-written
    is ever visible under ``uri``.
    """
    import hashlib

    if _is_s3(uri):  # a streamed multipart upload, published whole on completion, aborted on failure
        from airloop.store import s3

        sha, size = s3.write_stream(uri, chunks)
        return uri, sha, size
    fs, path = filesystem(uri)
    _ensure_parent(fs, path)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    digest, size = hashlib.sha256(), 0
    try:
        with fs.open_output_stream(tmp) as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(tmp)
        raise
    return uri, digest.hexdigest(), size


def _write_tables(out, tables: Iterable[pa.Table]) -> tuple[int, pa.Schema | None]:
    """The tables through one ParquetWriter onto the open stream ``out``; the writer is closed (footer written)
    before the stream, also on failure. (rows, schema), or (0, None) when there were no tables."""
    writer, rows, schema = None, 0, None
    try:
        for table in tables:
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(out, schema)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows, schema


def write_parquet_tables(uri: str, tables: Iterable[pa.Table]) -> tuple[int, pa.Schema | None]:
    """Write Arrow tables (chunks of one batch, same schema) as one Parquet object, atomically.

    Returns (rows, schema); with no tables nothing is written and (0, None) is returned. Memory stays at one
    chunk. A failure part-way removes the temporary object.
    """
    if _is_s3(uri):
        return _write_parquet_tables_s3(uri, tables)
    fs, path = filesystem(uri)
    _ensure_parent(fs, path)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open_output_stream(tmp) as out:
            rows, schema = _write_tables(out, tables)
        if schema is None:
            fs.delete_file(tmp)
            return 0, None
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(tmp)
        raise
    return rows, schema


def _write_parquet_tables_s3(uri: str, tables: Iterable[pa.Table]) -> tuple[int, pa.Schema | None]:
    """write_parquet_tables onto one multipart upload: completed after the footer, aborted on failure."""
    from airloop.store import s3

    out = s3.MultipartWriter(uri)
    try:
        rows, schema = _write_tables(out, tables)
        if schema is None:
            out.abort()
            return 0, None
        out.commit()
    except BaseException:
        out.abort()
        raise
    return rows, schema


def open_input(uri: str, random_access: bool = False) -> Any:
    """A readable binary stream of a lake object (close it, or use it in ``with``); ``random_access`` gives a
    seekable file (Parquet needs one)."""
    fs, path = filesystem(uri)
    try:
        return fs.open_input_file(path) if random_access else fs.open_input_stream(path)
    except FileNotFoundError:
        raise LakeError(f"{uri}: no such object in the lake") from None
