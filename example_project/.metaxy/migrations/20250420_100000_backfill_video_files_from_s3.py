"""Pattern 2: a CustomMigration that backfills video metadata from S3 with boto3.

Stage v4 added ``video/files``: the S3 object metadata (size, ETag, last modified) of every video. The objects
already exist, so instead of running a pipeline we list them once:

1. ask the store which samples need a row (``resolve_update``: new or changed samples, each with the
   provenance computed from ``video/raw``, i.e. the store's field provenance for those samples);
2. list ``s3://<bucket>/<prefix>`` page by page with boto3 and keep ``.mp4`` objects of at least
   ``min_size_bytes`` (aborted uploads leave zero-byte placeholders with the same file name);
3. join the page with the samples on ``sample_uid`` (the file name) and write the rows, one commit per page;
4. in a dry run, count instead of writing; log progress either way.

A CustomMigration is the right tool for one-off logic with full control. When the same source is used by
several migrations, write a reusable operation instead (see ``example_project/ops.py`` and the YAML
migration ``20250301_120000_thumbnails_and_batched_embeddings.yaml``).

Configuration: the bucket defaults to ``example-media`` (``EXAMPLE_MEDIA_BUCKET`` overrides it); the endpoint
and credentials come from the standard AWS settings (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, a role...).
"""

import logging
import os
import time
from datetime import datetime, timezone
from typing import ClassVar

import polars as pl
from pydantic import Field, field_validator, model_validator

from example_project.features import VideoFiles
from example_project.s3 import iter_object_pages, object_uri, s3_client, sample_uid_from_key
from metaxy_core.migrations import CustomMigration
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD

log = logging.getLogger("metaxy.migrations.example")


class BackfillVideoFilesFromS3(CustomMigration):
    migration_id: str = "20250420_100000_backfill_video_files_from_s3"
    created_at: datetime = datetime(2025, 4, 20, 10, 0, tzinfo=timezone.utc)
    parent: str = "20250410_080000_frame_decoder_upgrade"
    description: str = "Backfill video/files (size, ETag, last modified) from the video objects in S3"
    #: the features execute() writes: Dagster draws the lineage migration -> feature from it
    features: ClassVar[tuple[str, ...]] = ("video/files",)

    bucket: str = Field(default_factory=lambda: os.environ.get("EXAMPLE_MEDIA_BUCKET", "example-media"))
    prefix: str = "videos/"
    suffix: str = ".mp4"
    min_size_bytes: int = Field(
        1024, ge=0, description="Smaller objects are placeholders of aborted uploads."
    )
    max_size_bytes: int | None = Field(None, gt=0, description="Skip larger objects (None: no limit).")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.endswith("/"):
            raise ValueError(f"prefix {value!r} must end with '/'")
        return value

    @model_validator(mode="after")
    def _size_range(self) -> "BackfillVideoFilesFromS3":
        if self.max_size_bytes is not None and self.max_size_bytes <= self.min_size_bytes:
            raise ValueError(
                f"max_size_bytes ({self.max_size_bytes}) must exceed min_size_bytes ({self.min_size_bytes})"
            )
        return self

    def execute(self, store, project, *, dry_run: bool = False) -> int:
        started = time.perf_counter()
        todo = store.resolve_update(VideoFiles).collect()
        needed = pl.concat([todo.added, todo.changed]).select("sample_uid", PROVENANCE_BY_FIELD)
        log.info("%s: %d sample(s) need video/files rows", self.migration_id, needed.height)
        size = pl.col("size_bytes")
        in_range = size >= self.min_size_bytes
        if self.max_size_bytes is not None:
            in_range &= size <= self.max_size_bytes
        written = listed = out_of_range = 0
        for number, page in enumerate(iter_object_pages(s3_client(), self.bucket, self.prefix), start=1):
            listed += page.height
            out_of_range += page.filter(~in_range).height
            rows = (
                page.filter(in_range)
                .with_columns(sample_uid_from_key(self.prefix, self.suffix).alias("sample_uid"))
                .join(needed, on="sample_uid", how="inner")
                .select(
                    "sample_uid",
                    object_uri(self.bucket).alias("object_uri"),
                    "size_bytes",
                    "etag",
                    "last_modified",
                    PROVENANCE_BY_FIELD,
                )
            )
            if rows.height and not dry_run:
                store.write_metadata(VideoFiles, rows)
            written += rows.height
            log.info(
                "%s: page %d: %d objects listed, %d rows %s",
                self.migration_id,
                number,
                listed,
                written,
                "to write" if dry_run else "written",
            )
        log.info(
            "%s: %s %d video/files rows in %.1fs; %d objects listed, %d outside the size range, %d samples "
            "without a video object",
            self.migration_id,
            "would write" if dry_run else "wrote",
            written,
            time.perf_counter() - started,
            listed,
            out_of_range,
            needed.height - written,
        )
        return {"video/files": written}
