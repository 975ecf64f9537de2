"""Create the S3 buckets Airloop needs (idempotent): ``python -m airloop.store.buckets BUCKET [BUCKET ...]``.

Endpoint and credentials come from the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...). The
compose service ``create-buckets`` runs it once the object store is healthy; an object store that has just
started may refuse bucket creation for a few seconds, so each call is retried for up to ``timeout_s``.
"""

from __future__ import annotations

import os
import sys
import time

_REFUSED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def ensure_buckets(names: list[str], timeout_s: float = 60.0) -> list[str]:
    """Create each bucket that does not exist yet; returns the names created.

    Raises RuntimeError naming the endpoint and the bucket when the store still refuses after ``timeout_s``.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = boto3.client("s3")
    created = []
    for name in names:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if not _exists(s3, name):
                    s3.create_bucket(Bucket=name)
                    created.append(name)
                break
            except (BotoCoreError, ClientError) as err:
                endpoint = os.environ.get("AWS_ENDPOINT_URL", "the default AWS endpoint")
                code = err.response.get("Error", {}).get("Code") if isinstance(err, ClientError) else None
                if code in _REFUSED:  # no wait fixes wrong credentials
                    raise RuntimeError(f"bucket {name!r} at {endpoint}: refused ({code}); check the S3 keys") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"bucket {name!r} at {endpoint}: not created within {timeout_s:.0f} s ({err})"
                    ) from None
                time.sleep(1.0)
    return created


def _exists(s3, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=name)
        return True
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m airloop.store.buckets BUCKET [BUCKET ...]", file=sys.stderr)
        return 2
    try:
        created = ensure_buckets(argv)
    except RuntimeError as err:
        print(f"airloop.store.buckets: {err}", file=sys.stderr)
        return 1
    print("created:", ", ".join(created) if created else "none (all exist)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
