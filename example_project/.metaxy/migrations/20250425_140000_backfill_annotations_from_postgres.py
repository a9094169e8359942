"""Pattern 4: a CustomMigration that validates its configuration and its database before any work.

Stage v4 added ``video/annotations``: human labels that the labelling tool keeps in PostgreSQL. This
migration copies them into the store in batches. Its pydantic validators reject a bad configuration when the
file is loaded (by ``metaxy migrations status``, by Dagster at definition load), with a message naming the
file and the field:

* ``database_url``: a ``postgresql://`` URL (from ``DATABASE_URL``; a ``SecretStr``, so it never shows up in
  logs or reprs);
* ``table``: a plain (optionally schema-qualified) identifier, because it is put into SQL;
* ``batch_size``: between 100 and 50,000 rows;
* ``annotated_since`` / ``annotated_until``: a non-empty range that does not end in the future.

The database itself is checked only when the migration is about to run (apply or dry run): the executor
validates the migration again with the context ``{"metaxy_phase": "apply"}``, and only then does
``_check_database`` connect, find the table and its columns. Loading definitions never needs the database.
"""

import logging
import os
import re
import time
from datetime import datetime, timedelta, timezone
from typing import ClassVar

import polars as pl
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from example_project.features import VideoAnnotations
from metaxy_core.migrations import APPLY_PHASE, CustomMigration
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD

log = logging.getLogger("metaxy.migrations.example")

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
COLUMNS = ("sample_uid", "label", "annotator", "confidence", "annotated_at")


def _in_apply_phase(info: ValidationInfo) -> bool:
    return bool(info.context) and info.context.get("metaxy_phase") == APPLY_PHASE


class BackfillAnnotationsFromPostgres(CustomMigration):
    migration_id: str = "20250425_140000_backfill_annotations_from_postgres"
    created_at: datetime = datetime(2025, 4, 25, 14, 0, tzinfo=timezone.utc)
    parent: str = "20250420_100000_backfill_video_files_from_s3"
    description: str = "Backfill video/annotations from the labelling tool's PostgreSQL table, in batches"
    #: the features execute() writes: Dagster draws the lineage migration -> feature from it
    features: ClassVar[tuple[str, ...]] = ("video/annotations",)

    database_url: SecretStr = Field(default_factory=lambda: SecretStr(os.environ.get("DATABASE_URL", "")))
    table: str = "public.video_annotations"
    batch_size: int = Field(500, ge=100, le=50_000)
    annotated_since: datetime = datetime(2024, 1, 1, tzinfo=timezone.utc)
    annotated_until: datetime = datetime(2025, 4, 1, tzinfo=timezone.utc)

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        url = value.get_secret_value()
        if not url:
            if _in_apply_phase(info):
                raise ValueError(
                    "DATABASE_URL is not set; export it (postgresql://user:password@host:5432/db)"
                )
            return value  # loading definitions does not need the database
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"database_url must start with postgresql:// (got scheme {scheme or 'none'!r})")
        return value

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"table {value!r} must be a plain identifier like 'public.video_annotations'")
        return value

    @field_validator("annotated_since", "annotated_until")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("dates must carry a timezone, e.g. 2024-01-01T00:00:00+00:00")
        return value

    @model_validator(mode="after")
    def _date_range(self) -> "BackfillAnnotationsFromPostgres":
        if self.annotated_since >= self.annotated_until:
            raise ValueError(
                f"annotated_since ({self.annotated_since:%Y-%m-%d}) must be before annotated_until "
                f"({self.annotated_until:%Y-%m-%d})"
            )
        if self.annotated_until > datetime.now(timezone.utc) + timedelta(days=1):
            raise ValueError(f"annotated_until ({self.annotated_until:%Y-%m-%d}) is in the future")
        return self

    @model_validator(mode="after")
    def _check_database(self, info: ValidationInfo) -> "BackfillAnnotationsFromPostgres":
        if not _in_apply_phase(info):
            return self
        import psycopg

        schema, _, name = self.table.rpartition(".")
        try:
            with psycopg.connect(self.database_url.get_secret_value(), connect_timeout=5) as conn:
                found = conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s",
                    (schema or "public", name),
                ).fetchall()
        except psycopg.Error as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"cannot connect to DATABASE_URL ({first_line}); check the URL and that the server is up"
            ) from None
        if not found:
            raise ValueError(f"table {self.table} does not exist in the database at DATABASE_URL")
        missing = sorted(set(COLUMNS) - {row[0] for row in found})
        if missing:
            raise ValueError(f"table {self.table} lacks column(s) {missing}")
        return self

    def execute(self, store, project, *, dry_run: bool = False) -> dict:
        import psycopg

        started = time.perf_counter()
        todo = store.resolve_update(VideoAnnotations).collect()
        needed = pl.concat([todo.added, todo.changed]).select("sample_uid", PROVENANCE_BY_FIELD)
        log.info("%s: %d sample(s) need video/annotations rows", self.migration_id, needed.height)
        query = (
            f"SELECT {', '.join(COLUMNS)} FROM {self.table} "  # table checked by _table
            "WHERE annotated_at >= %s AND annotated_at < %s ORDER BY sample_uid"
        )
        schema = {
            "sample_uid": pl.String,
            "label": pl.String,
            "annotator": pl.String,
            "confidence": pl.Float64,
            "annotated_at": pl.Datetime("us", "UTC"),
        }
        read = written = batches = 0
        with psycopg.connect(self.database_url.get_secret_value()) as conn:
            # A named (server-side) cursor streams the table: memory is bounded by batch_size.
            with conn.cursor(name="metaxy_annotations_backfill") as cur:
                cur.execute(query, (self.annotated_since, self.annotated_until))
                while batch := cur.fetchmany(self.batch_size):
                    batches += 1
                    read += len(batch)
                    rows = pl.DataFrame(batch, schema=schema, orient="row").join(
                        needed, on="sample_uid", how="inner"
                    )
                    if rows.height and not dry_run:
                        store.write_metadata(VideoAnnotations, rows)
                    written += rows.height
                    log.info(
                        "%s: batch %d: %d rows read, %d %s",
                        self.migration_id,
                        batches,
                        read,
                        written,
                        "to write" if dry_run else "written",
                    )
        log.info(
            "%s: %s %d rows in %.1fs (%d read in %d batches; %d for samples not in the store or up to date)",
            self.migration_id,
            "would write" if dry_run else "wrote",
            written,
            time.perf_counter() - started,
            read,
            batches,
            read - written,
        )
        return {"video/annotations": written}
