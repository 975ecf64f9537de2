"""The real services the integration tests rely on are reachable, and SeaweedFS serves S3 with access control."""

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.integration


def test_seaweedfs_serves_s3_and_enforces_read_only_identity(s3_server):
    bucket = s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="raw/a.csv", Body=b"a,b\n1,2\n")
    assert s3_server.client(reader=True).get_object(Bucket=bucket, Key="raw/a.csv")["Body"].read() == b"a,b\n1,2\n"
    with pytest.raises(ClientError, match="AccessDenied"):
        s3_server.client(reader=True).put_object(Bucket=bucket, Key="raw/b.csv", Body=b"x")


def test_lake_on_s3_roundtrip(s3_env):
    import pandas as pd

    from airloop.store import lake as lk
    from airloop.store.lake import Lake

    lake = Lake("p", root=f"s3://{s3_env.new_bucket()}/lake")
    lk.write_parquet(lake.part("validated", "2026-01-01"), pd.DataFrame({"a": [1, 2]}))
    lk.write_parquet(lake.part("validated", "2026-01-01"), pd.DataFrame({"a": [3]}))
    assert lake.batches("validated") == ["2026-01-01"]
    assert lake.read_zone("validated")["a"].tolist() == [3]


def test_postgres_database_is_created_and_usable(postgres_url):
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select 1")).scalar() == 1
    engine.dispose()


def test_redis_answers():
    from fixtures.services import check_redis

    assert check_redis().startswith("redis://")
