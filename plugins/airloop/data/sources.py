"""Source readers by URI scheme: local files (``file://``), S3 (``s3://``, boto3) and SQL (``postgresql://``,
SQLAlchemy).

Credentials never come from YAML. A DAG task resolves ``source.connection`` (an Airflow Connection id) into a
small dict with :func:`airloop.orchestration.dagkit.source_connection` and passes it here as ``connection``::

    {"conn_type": "aws", "host": ..., "port": ..., "login": ..., "password": ..., "schema": ..., "extra": {...}}

Without one, S3 uses the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...), and SQL uses the URI
itself (``${VAR}`` is expanded from the environment by the config) plus libpq's ``PGUSER``/``PGPASSWORD``.

Errors: :class:`SourceError` (a ``BadInput``: a missing object or bucket, access denied, an unknown table; a
person must fix it) and :class:`SourceUnavailable` (the endpoint cannot be reached; Airflow retries it).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlparse

import pandas as pd

from airloop.errors import AirloopError, BadInput
from airloop.store.lake import DATE, DATE_IN_TEXT

SQL_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
_GLOB = re.compile(r"[*?\[]")
_PARTITION_SEGMENT = re.compile(rf"^(?:[A-Za-z_][A-Za-z0-9_]*=)?({DATE})$")
_DATE_IN_NAME = DATE_IN_TEXT
READ_CHUNK_BYTES = 8 << 20


class SourceError(BadInput):
    """A source that cannot be used as configured; the message names the URI and what was wrong."""


class SourceUnavailable(AirloopError, ConnectionError):
    """The source's endpoint cannot be reached now (connection refused, timeout); worth a retry."""


@dataclass(frozen=True)
class SourceObject:
    """One source file or object: its URI, its path relative to the listed base, and its size in bytes."""

    uri: str
    relative: str
    size: int | None = None

    @property
    def name(self) -> str:
        return self.relative.rsplit("/", 1)[-1]


def scheme_of(uri: str) -> str:
    return urlparse(uri).scheme.lower() or "file"


def is_sql(uri: str) -> bool:
    return scheme_of(uri) in SQL_SCHEMES


def batch_date(uri: str) -> str | None:
    """The batch date an object belongs to: a date in its file name (``x_2026-01-05.csv``), else the nearest
    partition folder (``date=2026-01-05/``, ``2026-01-05/``); None when it carries no date."""
    parts = urlparse(uri).path.rstrip("/").split("/")
    m = _DATE_IN_NAME.search(parts[-1])
    if m:
        return m.group(1)
    for seg in reversed(parts[:-1]):
        m = _PARTITION_SEGMENT.match(seg)
        if m:
            return m.group(1)
    return None


def _split_glob(path: str) -> tuple[str, str]:
    """Split a path at its first segment holding a glob: (base without trailing '/', pattern or '')."""
    segs = path.split("/")
    for i, seg in enumerate(segs):
        if _GLOB.search(seg):
            return "/".join(segs[:i]).rstrip("/"), "/".join(segs[i:])
    return path.rstrip("/"), ""


def _hidden(relative: str) -> bool:
    # _SUCCESS markers, .crc files and our own temporary objects are not data.
    return any(seg.startswith((".", "_")) for seg in relative.split("/")) or ".tmp-" in relative


def _looks_like_file(path: str) -> bool:
    """A last segment with an extension names a file; tells a missing file from a folder with no data yet."""
    return "." in path.rstrip("/").rsplit("/", 1)[-1]


def list_objects(uri: str, connection: dict | None = None) -> list[SourceObject]:
    """The files or objects a source URI names, sorted by URI.

    The URI may name one object, a folder/prefix (every file under it, recursively), or carry globs
    (``s3://b/landing/*.csv``, ``file:///data/date=*/part.csv``). An absent folder gives an empty list; a named
    object that does not exist, a missing bucket or denied access raise :class:`SourceError`.
    """
    kind = scheme_of(uri)
    if kind == "file":
        return _list_local(uri)
    if kind == "s3":
        return _list_s3(uri, connection)
    raise SourceError(f"source uri {uri!r}: expected a file://, s3:// or postgresql:// URI, found scheme {kind!r}")


def _list_local(uri: str) -> list[SourceObject]:
    import pyarrow.fs as pafs

    path = urlparse(uri).path if "://" in uri else uri
    base, pattern = _split_glob(path)
    fs = pafs.LocalFileSystem()
    info = fs.get_file_info(base)
    if not pattern and info.type == pafs.FileType.File:
        return [SourceObject(f"file://{base}", base.rsplit("/", 1)[1], info.size)]
    if not pattern and info.type == pafs.FileType.NotFound and _looks_like_file(base):
        raise SourceError(f"{uri}: no such file (expected a file, a folder or a glob)")
    out = []
    for item in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if item.type != pafs.FileType.File:
            continue
        relative = item.path[len(base) :].lstrip("/")
        if _hidden(relative) or (pattern and not fnmatch.fnmatchcase(relative, pattern)):
            continue
        out.append(SourceObject(f"file://{item.path}", relative, item.size))
    return sorted(out, key=lambda o: o.uri)


# --- S3 ------------------------------------------------------------------------------------------------------


def s3_client(connection: dict | None = None) -> Any:
    """A boto3 S3 client from an Airflow-style connection dict (login = access key id, password = secret,
    ``extra.endpoint_url`` or host, ``extra.region_name``), else from the environment."""
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {"config": Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=60)}
    conn = connection or {}
    extra = conn.get("extra") or {}
    endpoint = extra.get("endpoint_url") or conn.get("host")
    if endpoint and "://" not in endpoint:
        endpoint = f"http://{endpoint}" + (f":{conn['port']}" if conn.get("port") else "")
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if conn.get("login"):
        kwargs["aws_access_key_id"] = conn["login"]
        kwargs["aws_secret_access_key"] = conn.get("password")
    kwargs["region_name"] = extra.get("region_name") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    # A fresh session: boto3's default one caches the credentials it first found in the environment.
    return boto3.session.Session().client("s3", **kwargs)


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """Turn botocore's errors into ones that name the URI and what to do."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    try:
        yield
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound"):
            raise SourceError(f"{uri}: no such object (it was listed or named, but is not there)") from None
        if code == "NoSuchBucket":
            raise SourceError(f"{uri}: bucket {urlparse(uri).netloc!r} does not exist") from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"):
            raise SourceError(
                f"{uri}: access denied ({code}); expected credentials allowed to list and read it "
                "(set source.connection, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            ) from None
        raise SourceError(f"{uri}: S3 error {code}: {err}") from None
    except EndpointConnectionError as err:
        raise SourceUnavailable(f"{uri}: cannot reach the S3 endpoint ({err})") from None
    except NoCredentialsError:
        raise SourceError(f"{uri}: no S3 credentials (set source.connection or AWS_ACCESS_KEY_ID)") from None
    except BotoCoreError as err:
        raise SourceUnavailable(f"{uri}: S3 request failed: {err}") from None


def _list_s3(uri: str, connection: dict | None) -> list[SourceObject]:
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    base, pattern = _split_glob(key)
    client = s3_client(connection)
    out = []
    with _s3_errors(uri):
        if not pattern and base:
            with contextlib.suppress(SourceError), _s3_errors(uri):
                head = client.head_object(Bucket=bucket, Key=base)
                return [SourceObject(f"s3://{bucket}/{base}", base.rsplit("/", 1)[-1], head["ContentLength"])]
        prefix = f"{base}/" if base else ""
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :]
                if not relative or relative.endswith("/") or _hidden(relative):
                    continue
                if pattern and not fnmatch.fnmatchcase(relative, pattern):
                    continue
                out.append(SourceObject(f"s3://{bucket}/{item['Key']}", relative, item["Size"]))
    if not out and not pattern and _looks_like_file(base):
        raise SourceError(f"{uri}: no such object (expected an object, a prefix or a glob)")
    return sorted(out, key=lambda o: o.uri)


@contextlib.contextmanager
def open_object(uri: str, connection: dict | None = None) -> Iterator[BinaryIO]:
    """A binary stream of one source file or object, read in chunks by the caller (never all at once)."""
    kind = scheme_of(uri)
    if kind == "file":
        path = urlparse(uri).path
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise SourceError(f"{uri}: no such file (it was listed, but is gone)") from None
        except PermissionError:
            raise SourceError(f"{uri}: permission denied reading the file") from None
        with fh:
            yield fh
        return
    if kind == "s3":
        parsed = urlparse(uri)
        with _s3_errors(uri):
            body = s3_client(connection).get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
        try:
            yield body
        finally:
            body.close()
        return
    raise SourceError(f"{uri}: cannot open objects of scheme {kind!r}")


def iter_chunks(stream: BinaryIO, size: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk


# --- SQL -----------------------------------------------------------------------------------------------------


def sql_url(uri: str, connection: dict | None = None) -> Any:
    """The SQLAlchemy URL of a ``postgresql://`` source, with login and password from the connection dict."""
    import sqlalchemy as sa

    try:
        url = sa.make_url(uri)
    except Exception:
        raise SourceError(f"source uri {uri!r}: not a valid database URL") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    conn = connection or {}
    updates = {
        "host": conn.get("host") or url.host,
        "port": int(conn["port"]) if conn.get("port") else url.port,
        "username": conn.get("login") or url.username,
        "password": conn.get("password") or url.password,
        "database": url.database or conn.get("schema"),
    }
    return url.set(**updates)


def _quoted_source(table: str | None, query: str | None, uri: str) -> Any:
    import sqlalchemy as sa

    if bool(table) == bool(query):
        raise SourceError(f"source {uri}: expected exactly one of source.table or source.query for a SQL source")
    if table:
        schema, _, name = table.rpartition(".")
        return sa.table(name, schema=schema or None)
    return sa.text(query).columns().subquery("q")


def read_sql(
    uri: str,
    *,
    table: str | None,
    query: str | None,
    event_time_column: str | None = None,
    start: str | None = None,
    end: str | None = None,
    chunk_rows: int = 250_000,
    connection: dict | None = None,
) -> Iterator[pd.DataFrame]:
    """Rows of a table or query, streamed in frames of at most ``chunk_rows`` (a server-side cursor).

    With ``event_time_column`` and ``start``/``end`` only rows with ``start <= t < end`` are read. Raises
    :class:`SourceUnavailable` when the server cannot be reached, :class:`SourceError` for a bad table/query.
    """
    import sqlalchemy as sa

    url = sql_url(uri, connection)
    shown = url.render_as_string(hide_password=True)
    source = _quoted_source(table, query, uri)
    stmt = sa.select(sa.text("*")).select_from(source)
    if event_time_column and start and end:
        col = sa.column(event_time_column)
        stmt = stmt.where(col >= sa.literal(pd.Timestamp(start).to_pydatetime()))
        stmt = stmt.where(col < sa.literal(pd.Timestamp(end).to_pydatetime()))
    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        try:
            conn = engine.connect()
        except sa.exc.OperationalError as err:
            reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
            raise SourceUnavailable(f"{shown}: cannot connect to the database ({reason})") from None
        with conn:
            try:
                result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(stmt)
            except sa.exc.DBAPIError as err:
                reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
                what = f"table {table!r}" if table else "source.query"
                raise SourceError(f"{shown}: {what} cannot be read: {reason}") from None
            columns = list(result.keys())
            while rows := result.fetchmany(chunk_rows):
                yield pd.DataFrame.from_records(rows, columns=columns)
    finally:
        engine.dispose()
