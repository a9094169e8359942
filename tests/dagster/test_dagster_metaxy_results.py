"""What a migration written for Metaxy returns reaches Dagster: the rows of its ``MigrationResult`` in the
asset's metadata, and a failed result as a failed run (never a materialization)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from metaxy_dg_testkit import make_project

from metaxy_dagster import APPLY_JOB_NAME, build_migration_definitions

M3 = "20250103_000000_counted"
KEY3 = dg.AssetKey(["metaxy", "migrations", M3])

COUNTED = """
from datetime import datetime, timezone

from metaxy_core.migrations import CustomMigration, MigrationResult


class Counted(CustomMigration):
    migration_id: str = "20250103_000000_counted"
    created_at: datetime = datetime(2025, 1, 3, tzinfo=timezone.utc)
    parent: str = "20250102_000000_emb_v2_to_v3"

    def execute(self, store, project, *, dry_run=False):
        start = datetime.now(timezone.utc)
        return MigrationResult(
            migration_id=self.migration_id, status="{status}", features_completed=1, features_failed=0,
            features_skipped=0, affected_features=["video/embeddings"], errors={errors}, rows_affected=7,
            duration_seconds=0.0, timestamp=start,
        )
"""


def run_apply(tmp_path: Path, instance: dg.DagsterInstance, *, status: str, errors: str):
    project = make_project(tmp_path)
    (project.migrations_dir / f"{M3}.py").write_text(COUNTED.format(status=status, errors=errors))
    defs = build_migration_definitions(config_path=project.config_path)
    with project.active():
        return defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(
            instance=instance, raise_on_error=False
        )


def test_the_rows_a_metaxy_result_reports_are_the_asset_s_rows(tmp_path: Path, instance) -> None:
    result = run_apply(tmp_path, instance, status="completed", errors="{}")
    assert result.success
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == KEY3]
    metadata = event.materialization.metadata
    assert metadata["metaxy/rows"].value == 7 and metadata["metaxy/status"].value == "completed"


def test_a_failed_metaxy_result_fails_the_run_with_its_message(tmp_path: Path, instance) -> None:
    result = run_apply(tmp_path, instance, status="failed", errors='{"video/embeddings": "export missing"}')
    assert not result.success
    assert KEY3 not in {e.asset_key for e in result.get_asset_materialization_events()}
    [failure] = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert "Counted.execute() returned a failed result: video/embeddings: export missing" in description
