"""Two minimal migration classes to copy from (a reference, not part of the chain).

They live outside ``.metaxy/migrations/`` because a migration file holds exactly one Migration subclass.
To use one, copy it into ``.metaxy/migrations/<YYYYMMDD_HHMMSS_description>.py``, set ``migration_id`` to
the file name (without ``.py``), ``parent`` to the current head (``metaxy migrations status`` shows it), and
the snapshot versions (``metaxy migrations generate`` writes a YAML file with them filled in).
"""

from datetime import UTC, datetime

import polars as pl

from metaxy_core.migrations import CustomMigration, DataVersionReconciliation, PythonMigration
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD


class MinimalMigration(PythonMigration):
    """The smallest useful migration: carry rows over to new feature versions after a no-op refactor."""

    migration_id: str = "20250101_000000_minimal"
    created_at: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    parent: str = "initial"
    from_snapshot_version: str = "0000000000000000"  # the snapshot the stored rows were written under
    to_snapshot_version: str = "1111111111111111"  # the code's snapshot (`metaxy push` prints it)

    def build_operations(self):
        return [DataVersionReconciliation()]


class MinimalCustomMigration(CustomMigration):
    """Full control: ``execute`` does the work; return the number of rows written (or that would be)."""

    migration_id: str = "20250101_000001_minimal_custom"
    created_at: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    parent: str = "20250101_000000_minimal"

    def execute(self, store, project, *, dry_run=False):
        # Example: the videos moved to another bucket; rewrite their uri, keep every other column.
        stored = store.read_metadata("video/raw").collect()  # latest row per sample, current version
        moved = stored.filter(pl.col("uri").str.starts_with("s3://old-bucket/"))
        if dry_run:
            return moved.height  # a dry run only counts (the store refuses writes in a dry run anyway)
        keep = [c for c in moved.columns if c == PROVENANCE_BY_FIELD or not c.startswith("metaxy_")]
        rows = moved.select(keep).with_columns(
            pl.col("uri").str.replace("s3://old-bucket/", "s3://new-bucket/")
        )
        return store.write_metadata("video/raw", rows)  # appended; reads now see the new rows
