"""Create the S3 buckets Airloop needs (idempotent): ``python -m airloop.buckets BUCKET [BUCKET ...]``.

Endpoint and credentials come from the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import sys


def ensure_buckets(names: list[str]) -> list[str]:
    """Create each bucket that does not exist yet; returns the names created."""
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3")
    created = []
    for name in names:
        try:
            s3.head_bucket(Bucket=name)
        except ClientError:
            s3.create_bucket(Bucket=name)
            created.append(name)
    return created


if __name__ == "__main__":
    print("created:", ensure_buckets(sys.argv[1:]) or "none (all exist)")
