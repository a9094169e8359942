"""Reusable migration operations of the example project.

:class:`S3ObjectBackfill` is a :class:`~metaxy_core.migrations.MetadataBackfill`: configuration as validated
pydantic fields, work in ``execute``. YAML migrations use it by import path::

    ops:
      - type: example_project.ops.S3ObjectBackfill
        id: backfill_thumbnails
        feature_key: video/thumbnails
        s3_bucket: example-media
        prefix: thumbnails/
        suffix: .jpg
        column_prefix: thumbnail_

Write one such class per kind of source (a bucket layout, a database table) and reuse it from every
migration that needs it, instead of copying a ``CustomMigration``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from example_project.s3 import iter_object_pages, object_uri, s3_client, sample_uid_from_key
from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.migrations import MetadataBackfill
from metaxy_core.migrations.context import step_progress
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD

log = logging.getLogger("metaxy.migrations.example")


class S3ObjectBackfill(MetadataBackfill):
    """Backfill a feature from the objects under an S3 prefix, one object per sample.

    The sample id is the object's file name without ``suffix``. For every sample the feature still needs
    (``resolve_update``: new or changed, with the provenance computed from its upstream features), the rows
    get ``<column_prefix>uri``, ``<column_prefix>bytes`` and ``<column_prefix>etag`` and are written under the
    migration's *target* snapshot, page by page. Objects smaller than ``min_size_bytes`` (placeholders of
    aborted uploads) and objects of samples the store does not know are skipped. Re-running writes nothing
    twice: samples already up to date are no longer in ``resolve_update``.

    Credentials and the endpoint come from the standard AWS configuration (``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, an instance role...), never from this file.
    """

    # Declaring the type as a Literal documents the import path and makes YAML files self-checking.
    type: Literal["example_project.ops.S3ObjectBackfill"] = "example_project.ops.S3ObjectBackfill"
    s3_bucket: str = Field(description="Bucket name, without s3://.")
    prefix: str = Field(description="Key prefix ending with '/', e.g. thumbnails/.")
    suffix: str = Field("", description="File name suffix to strip to get the sample id, e.g. .jpg.")
    column_prefix: str = Field("", description="Prefix of the written columns (uri, bytes, etag).")
    min_size_bytes: int = Field(1, ge=0, description="Skip smaller objects (aborted uploads are 0 bytes).")
    page_size: int = Field(
        1000, ge=1, le=1000, description="Objects per S3 listing page (S3's maximum is 1000)."
    )

    @field_validator("s3_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if value.startswith("s3://") or "/" in value:
            raise ValueError(f"s3_bucket must be a bucket name like 'example-media', not {value!r}")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not value.endswith("/"):
            raise ValueError(f"prefix {value!r} must end with '/' (a folder), e.g. {value + '/'!r}")
        return value

    @model_validator(mode="after")
    def _columns(self) -> S3ObjectBackfill:
        if self.column_prefix and not self.column_prefix.replace("_", "").isalnum():
            raise ValueError(f"column_prefix {self.column_prefix!r} may only hold letters, digits and '_'")
        return self

    def columns(self) -> list[pl.Expr]:
        """User columns written per object (override to write others); the listing has ``OBJECT_SCHEMA``."""
        p = self.column_prefix
        return [
            object_uri(self.s3_bucket).alias(f"{p}uri"),
            pl.col("size_bytes").alias(f"{p}bytes"),
            pl.col("etag").alias(f"{p}etag"),
        ]

    def target_graph(self, store: DeltaMetadataStore, to_snapshot_version: str) -> FeatureGraph:
        """The graph rows are written under: the code's when it is the target, else the pushed snapshot."""
        active = FeatureGraph.get_active()
        if active.snapshot_version == to_snapshot_version:
            return active
        return store.load_snapshot_graph(to_snapshot_version)

    def execute(
        self,
        store: Any,
        *,
        from_snapshot_version: str | None,
        to_snapshot_version: str,
        dry_run: bool = False,
    ) -> int:
        started = time.perf_counter()
        graph = self.target_graph(store, to_snapshot_version)
        spec = graph.spec(self.feature_key)
        ids = list(spec.id_columns)
        todo = store.resolve_update(self.feature_key, graph=graph).collect()
        needed = pl.concat([todo.added, todo.changed]).select([*ids, PROVENANCE_BY_FIELD])
        log.info(
            "%s: %d sample(s) of %s need rows; listing s3://%s/%s",
            self.op_id,
            needed.height,
            self.feature_key,
            self.s3_bucket,
            self.prefix,
        )
        written = listed = skipped_small = 0
        # rows written / samples that need one, reported after each page (the CLI's line, Dagster's log)
        meter = step_progress(total=needed.height)
        seen: set[str] = set()
        for page_number, page in enumerate(
            iter_object_pages(s3_client(), self.s3_bucket, self.prefix, page_size=self.page_size), start=1
        ):
            listed += page.height
            small = page.filter(pl.col("size_bytes") < self.min_size_bytes)
            skipped_small += small.height
            rows = (
                page.filter(pl.col("size_bytes") >= self.min_size_bytes)
                .with_columns(sample_uid_from_key(self.prefix, self.suffix).alias(ids[0]))
                .filter(pl.col(ids[0]).is_not_null() & ~pl.col(ids[0]).is_in(list(seen)))
                .sort("last_modified")
                .unique(subset=ids, keep="last", maintain_order=True)
                .join(needed, on=ids, how="inner")
                .select(*ids, *self.columns(), PROVENANCE_BY_FIELD)
            )
            seen.update(rows[ids[0]].to_list())
            if rows.height and not dry_run:
                store.write_metadata(
                    self.feature_key, rows, graph=graph, snapshot_version=to_snapshot_version
                )
            written += rows.height
            meter.update(written)
            log.info(
                "%s: page %d: %d object(s) listed, %d row(s) %s so far",
                self.op_id,
                page_number,
                listed,
                written,
                "to write" if dry_run else "written",
            )
        log.info(
            "%s: %s %d row(s) of %s in %.1fs (%d object(s) listed, %d below %d bytes skipped, %d sample(s) "
            "without an object)",
            self.op_id,
            "would write" if dry_run else "wrote",
            written,
            self.feature_key,
            time.perf_counter() - started,
            listed,
            skipped_small,
            self.min_size_bytes,
            needed.height - written,
        )
        meter.finish()
        return written


class S3VideoBackfillOperation(S3ObjectBackfill):
    """The video files' S3 metadata (``video/files``), as a reusable operation.

    What the example's ``CustomMigration`` ``20250420_100000_backfill_video_files_from_s3`` does, as
    configuration only; this is the operation of the YAML example in the design notes::

        ops:
          - type: example_project.ops.S3VideoBackfillOperation
            id: backfill_videos
            feature_key: ["video", "files"]
            s3_bucket: prod-videos
            reason: Initial backfill
    """

    type: Literal["example_project.ops.S3VideoBackfillOperation"] = (
        "example_project.ops.S3VideoBackfillOperation"
    )
    prefix: str = Field("videos/", description="Key prefix ending with '/'.")
    suffix: str = Field(".mp4", description="File name suffix to strip to get the sample id.")
    min_size_bytes: int = Field(
        1024, ge=0, description="Smaller objects are placeholders of aborted uploads."
    )

    def columns(self) -> list[pl.Expr]:
        return [
            object_uri(self.s3_bucket).alias("object_uri"),
            pl.col("size_bytes"),
            pl.col("etag"),
            pl.col("last_modified"),
        ]
