"""S3 writes of any size for the lake: streamed multipart uploads and managed (multipart) copies, with
bounded timeouts, that publish an object only when it is complete and abort on failure.

Why not pyarrow's S3 output stream: closing it on an exception completes the upload, publishing half an
object, and ``move`` is one CopyObject, which S3 servers refuse or time out on for large objects ("Less than 1
bytes/sec"). Endpoint and credentials come from the environment, as for pyarrow (``AWS_ENDPOINT_URL``...).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PART_BYTES = 16 << 20  # multipart part size (S3's minimum is 5 MiB; 10,000 parts allow 160 GB objects)
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120
MAX_ATTEMPTS = 4


def client() -> Any:
    """A boto3 S3 client with bounded timeouts and retries."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint else None,
    )
    # A fresh session: boto3's default one caches the credentials it first found in the environment, so a worker
    # whose credentials change (a rotated key, another identity) would go on signing with the old ones.
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), config=config
    )


def split(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


class MultipartWriter:
    """A write-only file object over one multipart upload: ``write`` buffers and uploads parts,
    :meth:`commit` completes the upload (the object appears whole), :meth:`abort` drops it. Usable with
    pyarrow's ParquetWriter (``tell``, ``flush``, ``closed``)."""

    def __init__(self, uri: str, s3: Any | None = None):
        self.uri = uri
        self.bucket, self.key = split(uri)
        self.s3 = s3 or client()
        self.upload_id: str | None = None
        self.parts: list[dict] = []
        self.buffer = bytearray()
        self.size = 0
        self.closed = False

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> int:
        data = bytes(data)
        self.buffer += data
        self.size += len(data)
        while len(self.buffer) >= PART_BYTES:
            self._upload(bytes(self.buffer[:PART_BYTES]))
            del self.buffer[:PART_BYTES]
        return len(data)

    def _upload(self, body: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self.parts) + 1
        answer = self.s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def commit(self) -> None:
        """Publish the object (one PUT when it fits in one part)."""
        if self.upload_id is None:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
        else:
            if self.buffer:
                self._upload(bytes(self.buffer))
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
            )
        self.buffer.clear()
        self.closed = True

    def abort(self) -> None:
        """Drop the upload and its parts; nothing appears under the key."""
        self.closed = True
        self.buffer.clear()
        if self.upload_id is not None:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception as err:  # the next clean_uploads of this prefix removes it
                log.warning("%s: could not abort multipart upload %s: %s", self.uri, self.upload_id, err)

    def close(self) -> None:  # pyarrow closes what it was given; committing is explicit
        self.closed = True


def write_stream(uri: str, chunks: Iterable[bytes]) -> tuple[str, int]:
    """Stream chunks to ``uri`` (multipart above one part); returns (sha256 hex, size). On any failure the
    upload is aborted: nothing, not even a pending upload, is left."""
    digest = hashlib.sha256()
    writer = MultipartWriter(uri)
    try:
        for chunk in chunks:
            digest.update(chunk)
            writer.write(chunk)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return digest.hexdigest(), writer.size


def move(src_uri: str, dst_uri: str) -> None:
    """Managed copy (multipart above 64 MiB, so any size works) then delete the source."""
    from boto3.s3.transfer import TransferConfig

    s3 = client()
    src_bucket, src_key = split(src_uri)
    dst_bucket, dst_key = split(dst_uri)
    config = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)
    s3.copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key, Config=config)
    s3.delete_object(Bucket=src_bucket, Key=src_key)


def pending_uploads(prefix_uri: str) -> list[tuple[str, str]]:
    """(key, upload id) of the multipart uploads under a prefix that were never completed nor aborted."""
    bucket, prefix = split(prefix_uri)
    answer = client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [(u["Key"], u["UploadId"]) for u in answer.get("Uploads", [])]


def clean_uploads(prefix_uri: str) -> list[str]:
    """Abort what :func:`pending_uploads` lists (a killed writer's parts); returns the keys."""
    bucket, _ = split(prefix_uri)
    s3 = client()
    pending = pending_uploads(prefix_uri)
    for key, upload_id in pending:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    return [key for key, _ in pending]
