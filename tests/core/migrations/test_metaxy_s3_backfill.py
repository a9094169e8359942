"""A backfill operation written for Metaxy, with narwhals, run against a real S3-compatible server (moto):
the media bucket it lists and the metadata store it writes are both on S3, and its credentials come through
``${VAR}`` in the migration file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaxy_core.testing import S3Location
from metaxy_core.testing.project import ProjectDir

FEATURES = """
from metaxy_core.testing import declare_video_features

declare_video_features()
"""

# Written as Metaxy's documented S3 backfill, in narwhals (only the metaxy imports renamed).
OPS = """
import boto3
import narwhals as nw

from metaxy_core.migrations import MetadataBackfill


class S3VideoBackfill(MetadataBackfill):
    s3_bucket: str
    s3_prefix: str = "videos/"
    min_size_bytes: int = 0
    endpoint_url: str
    aws_access_key_id: str
    aws_secret_access_key: str

    def execute_for_feature(self, store, feature_key, *, snapshot_version, from_snapshot_version=None,
                            dry_run=False):
        s3 = boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=self.aws_access_key_id,
                          aws_secret_access_key=self.aws_secret_access_key)
        objects = []
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.s3_bucket, Prefix=self.s3_prefix)
        for page in pages:
            objects.extend(page.get("Contents", []))
        etags = [obj["ETag"].strip('"') for obj in objects]
        external_df = nw.from_dict(
            {
                "sample_uid": [obj["Key"][len(self.s3_prefix):].rsplit(".", 1)[0] for obj in objects],
                "path": [f"s3://{self.s3_bucket}/{obj['Key']}" for obj in objects],
                "size_bytes": [obj["Size"] for obj in objects],
                "metaxy_provenance_by_field": [{"frames": e, "audio": e} for e in etags],
            },
            backend="polars",
        ).filter(nw.col("size_bytes") >= self.min_size_bytes)
        increment = store.resolve_update(feature_key, samples=external_df)
        if len(increment.added) == 0:
            return 0
        added = nw.from_native(increment.added.to_native()).select("sample_uid")
        to_write = external_df.join(added, on="sample_uid", how="inner")
        if not dry_run:
            store.write_metadata(feature_key, to_write)
        return len(to_write)
"""

MIGRATION = """
migration_type: metaxy.migrations.models.FullGraphMigration
id: "20250401_000000_backfill_videos"
created_at: "2025-04-01T00:00:00+00:00"
parent: initial
ops:
  - type: mx_s3_ops.S3VideoBackfill
    features: ["video/raw"]
    s3_bucket: "{media}"
    min_size_bytes: 100
    endpoint_url: "${{MX_S3_ENDPOINT}}"
    aws_access_key_id: "${{MX_S3_KEY_ID}}"
    aws_secret_access_key: "${{MX_S3_SECRET}}"
"""


@pytest.fixture
def media(moto_endpoint: str) -> S3Location:
    """A media bucket: five videos, one of them too small to be a video."""
    location = S3Location.create(moto_endpoint, prefix="")
    client = location.client()
    for uid, size in [("v1", 300), ("v2", 200), ("v3", 150), ("v4", 120), ("tiny", 10)]:
        client.put_object(Bucket=location.bucket, Key=f"videos/{uid}.mp4", Body=b"x" * size)
    return location


def test_a_narwhals_backfill_lists_s3_and_writes_the_s3_store_with_credentials_from_the_environment(
    tmp_path: Path, s3: S3Location, media: S3Location
) -> None:
    project = ProjectDir(
        tmp_path / "demo",
        modules={"mx_s3_features": FEATURES, "mx_s3_ops": OPS},
        store=s3.root,
        storage_options={
            "AWS_ENDPOINT_URL": s3.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "${MX_S3_KEY_ID}",
            "AWS_SECRET_ACCESS_KEY": "${MX_S3_SECRET}",
        },
    )
    project.migration("20250401_000000_backfill_videos.yaml", MIGRATION.format(media=media.bucket))
    env = {"MX_S3_ENDPOINT": s3.endpoint, "MX_S3_KEY_ID": s3.key_id, "MX_S3_SECRET": s3.secret}

    plan = project.run("migrations", "apply", "--dry-run", "--format", "json", env=env)
    assert plan.code == 0, plan.err
    assert [(s["feature_key"], s["rows"]) for s in json.loads(plan.out)[0]["steps"]] == [("video/raw", 4)]
    with project.session(env) as p:
        assert not p.store.has_metadata("video/raw")  # the dry run wrote nothing

    applied = project.run("migrations", "apply", "--format", "json", env=env)
    assert applied.code == 0, applied.err
    assert json.loads(applied.out)[0]["rows_affected"] == 4
    with project.session(env) as p:
        rows = p.store.read_metadata("video/raw", graph=p.graph).collect().sort("sample_uid")
        assert rows["sample_uid"].to_list() == ["v1", "v2", "v3", "v4"]
        assert rows["path"][0] == f"s3://{media.bucket}/videos/v1.mp4" and rows["size_bytes"].to_list() == [
            300,
            200,
            150,
            120,
        ]
        # The downstream feature can be computed from what the backfill wrote.
        assert len(p.store.resolve_update("video/embeddings", graph=p.graph).added) == 4
    status = project.run("migrations", "status", "--format", "json", env=env)
    assert json.loads(status.out)[0]["rows"] == 4
    assert project.run("migrations", "apply", env=env).code == 0  # nothing left: a no-op
    for run in (plan, applied, status):
        assert s3.secret not in run.out + run.err
