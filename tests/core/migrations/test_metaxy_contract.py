"""Migration files written as Metaxy users write them (only ``metaxy`` -> ``metaxy_core`` in the imports), run
through the ``metaxy`` command line on a real Delta store: what they return, raise and override is honoured,
and a failure is never recorded as success.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from metaxy_core.migrations import MigrationResult
from metaxy_core.testing import video_graph, video_raw_rows
from metaxy_core.testing.project import ProjectDir

FEATURES = """
import os

from metaxy_core.testing import declare_video_features

declare_video_features(
    frames=os.environ.get("MX_FRAMES", "1"),
    embedding=os.environ.get("MX_EMBEDDING", "1"),
    downstream="video/clip_scores",
)
"""
EMB, SCORES, RAW = "video/embeddings", "video/clip_scores", "video/raw"


def graph(**versions: str):  # the graph the entrypoint declares with these code versions
    return video_graph(downstream="video/clip_scores", **versions)


@pytest.fixture
def project(tmp_path: Path) -> ProjectDir:
    return ProjectDir(tmp_path / "demo", modules={"mx_features": FEATURES})


def seed_raw(project: ProjectDir, uids: list[int]) -> None:
    with project.session() as p:
        p.store.write_metadata(RAW, video_raw_rows(uids), graph=p.graph)


def seed_all(project: ProjectDir, uids: list[int], env: dict[str, str] | None = None) -> None:
    """Raw rows and every downstream feature computed from them: all up to date under ``env``'s code."""
    with project.session(env) as p:
        store, g = p.store, p.graph
        store.write_metadata(RAW, video_raw_rows(uids), graph=g)
        store.write_metadata(
            EMB, store.resolve_update(EMB, graph=g).added.with_columns(dim=pl.lit(8)), graph=g
        )
        scores = store.resolve_update(SCORES, graph=g).added.with_columns(score=pl.lit(0.5))
        store.write_metadata(SCORES, scores, graph=g)


def stored(project: ProjectDir, feature: str, env: dict[str, str] | None = None) -> pl.DataFrame:
    with project.session(env) as p:
        return p.store.read_metadata(feature, graph=p.graph, allow_missing=True).collect()


# ------------------------------------------------------------------------ CustomMigration, failed result
CUSTOM_BACKFILL = '''
"""Backfill video/embeddings from an export, Metaxy's documented custom-migration shape."""

from datetime import datetime, timezone

import narwhals as nw
import polars as pl

from metaxy_core.migrations import CustomMigration, MigrationResult


class EmbeddingsFromExport(CustomMigration):
    migration_id: str = "20250301_000000_embeddings_from_export"
    created_at: datetime = datetime(2025, 3, 1, tzinfo=timezone.utc)
    parent: str = "initial"
    export_path: str = "{export}"

    def get_affected_features(self, store, project):
        return ["video/embeddings"]

    def execute(self, store, project, *, dry_run=False):
        start_time = datetime.now(timezone.utc)
        feature_key_str = "video/embeddings"
        try:
            external_df = pl.read_parquet(self.export_path)
            diff_result = store.resolve_update(
                feature_key_str, samples=nw.from_native(external_df.select("sample_uid"))
            )
            rows_affected = 0
            if len(diff_result.added) > 0:
                added_df = nw.from_native(diff_result.added.to_native()).to_polars()
                provenance_df = added_df.select(["sample_uid", "metaxy_provenance_by_field"])
                df_to_write = external_df.join(provenance_df, on="sample_uid", how="inner")
                if not dry_run:
                    store.write_metadata(feature_key_str, nw.from_native(df_to_write))
                rows_affected = len(df_to_write)
            return MigrationResult(
                migration_id=self.migration_id,
                status="skipped" if dry_run else "completed",
                features_completed=1,
                features_failed=0,
                features_skipped=0,
                affected_features=[feature_key_str],
                errors={{}},
                rows_affected=rows_affected,
                duration_seconds=(datetime.now(timezone.utc) - start_time).total_seconds(),
                timestamp=start_time,
            )
        except Exception as e:
            return MigrationResult(
                migration_id=self.migration_id,
                status="failed",
                features_completed=0,
                features_failed=1,
                features_skipped=0,
                affected_features=[],
                errors={{feature_key_str: str(e)}},
                rows_affected=0,
                duration_seconds=(datetime.now(timezone.utc) - start_time).total_seconds(),
                timestamp=start_time,
            )
'''
CUSTOM_ID = "20250301_000000_embeddings_from_export"


def test_a_custom_migration_returning_a_failed_result_fails_with_its_message_and_resumes_once_fixed(
    project: ProjectDir, tmp_path: Path
) -> None:
    seed_raw(project, [1, 2, 3])
    export = tmp_path / "embeddings.parquet"
    project.migration(f"{CUSTOM_ID}.py", CUSTOM_BACKFILL.format(export=export))

    failed = project.run("migrations", "apply")
    assert failed.code == 1
    [line] = failed.failed_lines  # one line: the file, the method, the error it reported
    assert f"{CUSTOM_ID}.py" in line and "EmbeddingsFromExport.execute() returned a failed result" in line
    assert "returned a failed result: video/embeddings: " in line  # then the error it caught, as it said it
    status = json.loads(project.run("migrations", "status", "--format", "json").out)
    assert status[0]["status"] == "failed" and "returned a failed result" in status[0]["error"]
    assert stored(project, EMB).height == 0  # nothing written
    history = json.loads(project.run("migrations", "history", "--format", "json").out)
    assert [e["status"] for e in history] == ["started", "failed", "failed"]  # step, then migration

    pl.DataFrame({"sample_uid": [1, 2], "dim": [768, 768]}).write_parquet(export)  # the export arrives
    plan = project.run("migrations", "apply", "--dry-run", "--format", "json")
    assert plan.code == 0 and json.loads(plan.out)[0]["steps"][0]["rows"] == 2  # rows_affected reaches plans
    applied = project.run("migrations", "apply", "--format", "json")
    assert applied.code == 0, applied.err
    [result] = json.loads(applied.out)
    assert (
        result["status"] == "completed" and result["steps"][0]["rows"] == 2 and result["rows_affected"] == 2
    )
    status = json.loads(project.run("migrations", "status", "--format", "json").out)
    assert status[0]["status"] == "completed" and status[0]["rows"] == 2
    history = json.loads(project.run("migrations", "history", "--format", "json").out)
    assert history[-2]["status"] == "completed" and history[-2]["rows"] == 2
    assert sorted(stored(project, EMB)["dim"].to_list()) == [768, 768]


def test_a_migration_result_is_constructed_and_summarised_as_metaxy_code_does() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    result = MigrationResult(
        migration_id="20250101_000000_x",
        status="failed",
        features_completed=1,
        features_failed=1,
        features_skipped=0,
        affected_features=["video/raw"],
        errors={"video/embeddings": "bucket not found"},
        rows_affected=2,
        duration_seconds=1.5,
        timestamp=start,
    )
    assert result.failed and result.duration_seconds == 1.5 and result.rows_affected == 2
    assert result.summary().splitlines()[:6] == [
        "Migration: 20250101_000000_x",
        "Status: FAILED",
        "Timestamp: 2025-01-01T00:00:00+00:00",
        "Duration: 1.50s",
        "Features: 1 completed, 1 failed",
        "Rows affected: 2",
    ]
    assert "  ✗ video/embeddings: bucket not found" in result.summary()
    # A result reporting errors is a failure even when its status says otherwise; a misspelt field is refused.
    assert MigrationResult(migration_id="x", status="completed", errors={"a/b": "boom"}).failed
    with pytest.raises(ValueError, match="row_affected"):
        MigrationResult(migration_id="x", status="completed", row_affected=3)


# -------------------------------------------------------------- PythonMigration with its execute overridden
HOOKED = """
from datetime import datetime, timezone
from pathlib import Path

from metaxy_core.migrations import DataVersionReconciliation, PythonMigration

LOG = Path("{log}")


class ReconcileWithHooks(PythonMigration):
    migration_id: str = "20250302_000000_reconcile_with_hooks"
    created_at: datetime = datetime(2025, 3, 2, tzinfo=timezone.utc)
    parent: str = "initial"
    from_snapshot_version: str = "{old}"
    to_snapshot_version: str = "{new}"

    def build_operations(self):
        return [DataVersionReconciliation()]

    def execute(self, store, project, *, dry_run: bool = False):
        with LOG.open("a") as log:
            log.write(f"pre dry_run={{dry_run}}\\n")
        result = super().execute(store, project, dry_run=dry_run)
        with LOG.open("a") as log:
            log.write(f"post {{result.status}} rows={{result.rows_affected}}\\n")
        return result
"""
HOOKED_ID = "20250302_000000_reconcile_with_hooks"


def test_an_overridden_python_migration_execute_runs_its_hooks_around_the_operations(
    project: ProjectDir, tmp_path: Path
) -> None:
    old, new = graph(), graph(embedding="2")
    seed_all(project, [1, 2, 3, 4])
    assert project.run("push").code == 0 and project.run("push", env={"MX_EMBEDDING": "2"}).code == 0
    log = tmp_path / "hooks.log"
    project.migration(
        f"{HOOKED_ID}.py", HOOKED.format(log=log, old=old.snapshot_version, new=new.snapshot_version)
    )
    new_code = {"MX_EMBEDDING": "2"}

    plan = project.run("migrations", "apply", "--dry-run", "--format", "json", env=new_code)
    assert plan.code == 0, plan.err
    steps = json.loads(plan.out)[0]["steps"]
    assert [(s["op_id"], s["feature_key"], s["rows"]) for s in steps] == [
        ("reconcile", EMB, 4),
        ("reconcile", SCORES, 4),
        ("execute", "*", 0),
    ]
    assert log.read_text().splitlines() == ["pre dry_run=True", "post planned rows=8"]

    applied = project.run("migrations", "apply", "--format", "json", env=new_code)
    assert applied.code == 0, applied.err
    assert log.read_text().splitlines()[2:] == ["pre dry_run=False", "post completed rows=8"]
    status = json.loads(project.run("migrations", "status", "--format", "json", env=new_code).out)[0]
    assert status["status"] == "completed" and status["rows"] == 8  # each step counted once
    steps = {(s["op_id"], s["feature"], s["status"]) for s in status["steps"]}
    assert steps == {
        ("reconcile", EMB, "completed"),
        ("reconcile", SCORES, "completed"),
        ("execute", "*", "completed"),
    }
    assert stored(project, EMB, new_code).height == 4 and stored(project, SCORES, new_code).height == 4
    # Dagster and plans see one step for it: its own execute.
    with project.session(new_code) as p:
        path = f"_metaxy_migrations.{HOOKED_ID}.ReconcileWithHooks"
        assert p.chain.get(HOOKED_ID).operation_labels() == [("execute", path)]


FAILING_OP = """
from metaxy_core.migrations import MetadataBackfill


class BrokenSource(MetadataBackfill):
    def execute_for_feature(self, store, feature_key, *, snapshot_version, from_snapshot_version=None,
                            dry_run=False):
        raise ConnectionError("source database unreachable")
"""
SWALLOWING = """
from datetime import datetime, timezone

from metaxy_core.migrations import MigrationResult, PythonMigration


class Swallows(PythonMigration):
    migration_id: str = "20250303_000000_swallows"
    created_at: datetime = datetime(2025, 3, 3, tzinfo=timezone.utc)
    parent: str = "initial"
    from_snapshot_version: str = "{old}"
    to_snapshot_version: str = "{old}"

    def build_operations(self):
        return [{{"type": "mx_failing_ops.BrokenSource", "features": ["video/embeddings"]}}]

    def execute(self, store, project, *, dry_run=False):
        super().execute(store, project, dry_run=dry_run)  # the failed result is ignored here
        return MigrationResult(migration_id=self.migration_id, status="completed", rows_affected=0)
"""


def test_an_operation_failing_inside_an_overridden_execute_fails_the_migration_whatever_it_returns(
    project: ProjectDir,
) -> None:
    old = graph()
    seed_all(project, [1, 2])
    assert project.run("push").code == 0
    project.write("mx_failing_ops.py", FAILING_OP)
    project.modules.append("mx_failing_ops")
    project.migration("20250303_000000_swallows.py", SWALLOWING.format(old=old.snapshot_version))

    run = project.run("migrations", "apply")
    assert run.code == 1
    [line] = run.failed_lines
    assert "operation broken_source on video/embeddings failed" in line
    assert "BrokenSource.execute_for_feature() raised ConnectionError: source database unreachable" in line
    status = json.loads(project.run("migrations", "status", "--format", "json").out)[0]
    assert status["status"] == "failed" and status["steps_failed"] == 2  # the operation and the execute step


# --------------------------------------------------------------- operation config: features:, ${VAR}
OPS = '''
import polars as pl
from pathlib import Path
from pydantic import field_validator

from metaxy_core.migrations import MetadataBackfill

CALLS = []


class ParquetBackfill(MetadataBackfill):
    """Metaxy's per-feature contract only: called once per target feature."""

    source_dir: str
    token: str

    @field_validator("token")
    @classmethod
    def _token(cls, value):
        if not value.startswith("tok-"):
            raise ValueError(f"token {value!r} must start with 'tok-'")
        return value

    def execute_for_feature(self, store, feature_key, *, snapshot_version, from_snapshot_version=None,
                            dry_run=False):
        Path(self.source_dir, "calls.log").open("a").write(f"{feature_key} {snapshot_version} {dry_run}\\n")
        export = pl.read_parquet(Path(self.source_dir) / (feature_key.split("/")[1] + ".parquet"))
        increment = store.resolve_update(feature_key, samples=export.select("sample_uid"))
        rows = export.join(increment.added.to_native().select("sample_uid", "metaxy_provenance_by_field"),
                           on="sample_uid")
        if not dry_run:
            store.write_metadata(feature_key, rows)
        return len(rows)
'''
FULL_GRAPH_YAML = """
migration_type: metaxy.migrations.models.FullGraphMigration
id: "20250304_000000_backfill_exports"
created_at: "2025-03-04T00:00:00+00:00"
parent: initial
project_version: "{snapshot}"
ops:
  - type: mx_ops.ParquetBackfill
    features: ["video/clip_scores", "video/embeddings"]
    source_dir: "${{MX_EXPORTS}}"
    token: "${{MX_TOKEN}}"
"""


def test_features_and_env_substitution_in_operation_config_call_execute_for_feature_per_feature(
    project: ProjectDir, tmp_path: Path
) -> None:
    g = graph()
    seed_raw(project, [1, 2, 3])
    exports = tmp_path / "exports"
    exports.mkdir()
    pl.DataFrame({"sample_uid": [1, 2, 3], "dim": [4, 4, 4]}).write_parquet(exports / "embeddings.parquet")
    pl.DataFrame({"sample_uid": [1, 2], "score": [0.1, 0.2]}).write_parquet(exports / "clip_scores.parquet")
    project.write("mx_ops.py", OPS)
    project.modules.append("mx_ops")
    project.migration(
        "20250304_000000_backfill_exports.yaml", FULL_GRAPH_YAML.format(snapshot=g.snapshot_version)
    )
    env = {"MX_EXPORTS": str(exports), "MX_TOKEN": "tok-s3cr3t-value"}

    run = project.run("migrations", "apply", "--format", "json", env=env)
    assert run.code == 0, run.err
    [result] = json.loads(run.out)
    assert [(s["feature_key"], s["rows"]) for s in result["steps"]] == [
        (EMB, 3),
        (SCORES, 2),
    ]  # upstream first
    calls = (exports / "calls.log").read_text().splitlines()
    assert calls == [f"{EMB} {g.snapshot_version} False", f"{SCORES} {g.snapshot_version} False"]
    assert stored(project, SCORES).height == 2

    # An unset variable is one clear error naming the field and the variable.
    missing = project.run("migrations", "list", env={"MX_EXPORTS": str(exports), "MX_TOKEN": None})
    assert "`token` references ${MX_TOKEN}, but the environment variable MX_TOKEN is not set" in missing.err
    # A substituted value is a secret: a validator quoting it never shows it.
    bad = project.run(
        "migrations", "list", env={"MX_EXPORTS": str(exports), "MX_TOKEN": "wrong-s3cr3t-value"}
    )
    assert bad.code == 1 and "must start with 'tok-'" in bad.err and "wrong-s3cr3t-value" not in bad.err


# ---------------------------------------------------------------------- the skip-root-features pattern
SKIP_ROOTS = """
from datetime import datetime, timezone

from metaxy_core.migrations.models import PythonMigration
from metaxy_core.graph import FeatureGraph, FeatureKey


class SkipRoots(PythonMigration):
    migration_id: str = "20250305_000000_skip_roots"
    created_at: datetime = datetime(2025, 3, 5, tzinfo=timezone.utc)
    parent: str = "initial"
    from_snapshot_version: str = "{old}"
    to_snapshot_version: str = "{new}"
    skip_root_features: bool = {skip}

    def build_operations(self):
        return [{{"type": "metaxy.migrations.ops.DataVersionReconciliation"}}]

    def get_affected_features(self, store, project):
        all_affected = super().get_affected_features(store, project)
        if self.skip_root_features:
            graph = FeatureGraph.get_active()
            filtered = []
            for feature_key_str in all_affected:
                feature_key_obj = FeatureKey(feature_key_str.split("/"))
                if feature_key_obj not in graph.features_by_key:
                    continue
                plan = graph.get_feature_plan(feature_key_obj)
                has_upstream = plan.deps is not None and len(plan.deps) > 0
                if has_upstream:
                    filtered.append(feature_key_str)
            return filtered
        return all_affected
"""


@pytest.mark.parametrize("skip", [True, False])
def test_the_documented_skip_root_features_pattern_filters_string_keys(
    project: ProjectDir, skip: bool
) -> None:
    old, new = graph(), graph(frames="2")  # a root changed: raw, and everything downstream of it
    seed_all(project, [1, 2])
    assert project.run("push").code == 0 and project.run("push", env={"MX_FRAMES": "2"}).code == 0
    mid = "20250305_000000_skip_roots"
    project.migration(
        f"{mid}.py", SKIP_ROOTS.format(old=old.snapshot_version, new=new.snapshot_version, skip=skip)
    )
    new_code = {"MX_FRAMES": "2"}

    explained = json.loads(project.run("migrations", "explain", mid, "--format", "json", env=new_code).out)
    assert explained["affected_features"] == ([EMB, SCORES] if skip else [RAW, EMB, SCORES])
    run = project.run("migrations", "apply", "--format", "json", env=new_code)
    features = [s["feature_key"] for s in json.loads(run.out)[0]["steps"]]
    if skip:
        assert run.code == 0 and RAW not in features
    else:  # the root left to recompute: a distinct exit code, the root named
        assert run.code == 3 and RAW in features and "video/raw" in run.err and "recompute" in run.err


# ------------------------------------------------------------------------- user-code errors: one line
RAISING_AFFECTED = """
from datetime import datetime, timezone

from metaxy_core.migrations import PythonMigration


class Broken(PythonMigration):
    migration_id: str = "20250306_000000_broken"
    created_at: datetime = datetime(2025, 3, 6, tzinfo=timezone.utc)
    parent: str = "initial"
    from_snapshot_version: str = "{old}"
    to_snapshot_version: str = "{new}"

    def build_operations(self):
        return [{{"type": "metaxy.migrations.ops.DataVersionReconciliation"}}]

    def get_affected_features(self, store, project):
        return {{"video/raw": 1}}["video/embeddings"]
"""


def test_an_error_in_get_affected_features_is_one_failed_line_and_raiseerr_shows_the_traceback(
    project: ProjectDir,
) -> None:
    old, new = graph(), graph(embedding="2")
    seed_all(project, [1])
    assert project.run("push").code == 0 and project.run("push", env={"MX_EMBEDDING": "2"}).code == 0
    path = project.migration(
        "20250306_000000_broken.py",
        RAISING_AFFECTED.format(old=old.snapshot_version, new=new.snapshot_version),
    )
    run = project.run("migrations", "apply", "--dry-run", env={"MX_EMBEDDING": "2"})
    assert run.code == 1 and run.err.strip().splitlines() == run.failed_lines  # nothing but the one line
    [line] = run.failed_lines
    assert line.startswith(
        f"FAILED: {path}: Broken.get_affected_features() raised KeyError: 'video/embeddings'"
    )
    assert "--raiseerr" in line
    traced = project.run("migrations", "apply", "--dry-run", "--raiseerr", env={"MX_EMBEDDING": "2"})
    assert (
        traced.code == 1
        and "Traceback" in traced.err
        and 'return {"video/raw": 1}["video/embeddings"]' in traced.err
    )


# ---------------------------------------------------------------- methods the engine would never call
REFUSED = {
    "custom_with_operations": """
from datetime import datetime, timezone
from metaxy_core.migrations import CustomMigration

class Mixed(CustomMigration):
    migration_id: str = "20250307_000000_refused"
    created_at: datetime = datetime(2025, 3, 7, tzinfo=timezone.utc)

    def build_operations(self):
        return []

    def execute(self, store, project, *, dry_run=False):
        return 0
""",
    "bare_migration": """
from datetime import datetime, timezone
from metaxy_core.migrations import Migration

class Bare(Migration):
    migration_id: str = "20250307_000000_refused"
    created_at: datetime = datetime(2025, 3, 7, tzinfo=timezone.utc)

    def get_affected_features(self, store, project):
        return []
""",
}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "custom_with_operations",
            "is a CustomMigration, whose execute() is all that runs, so its build_operations() would never "
            "be called",
        ),
        ("bare_migration", "subclasses Migration but does not implement execute()"),
    ],
)
def test_a_method_the_engine_would_not_call_is_refused_at_load_naming_it(
    project: ProjectDir, case: str, expected: str
) -> None:
    project.migration("20250307_000000_refused.py", REFUSED[case])
    run = project.run("migrations", "list")
    assert run.code == 1 and expected in run.err


BOTH_METHODS = """
from metaxy_core.migrations import MetadataBackfill


class Both(MetadataBackfill):
    def execute(self, store, *, from_snapshot_version, to_snapshot_version, dry_run=False):
        return 0

    def execute_for_feature(self, store, feature_key, *, snapshot_version, from_snapshot_version=None,
                            dry_run=False):
        return 0
"""


def test_an_operation_implementing_both_entry_points_is_refused_rather_than_one_silently_skipped(
    project: ProjectDir,
) -> None:
    project.write("mx_both.py", BOTH_METHODS)
    project.modules.append("mx_both")
    project.migration(
        "20250308_000000_both.yaml",
        f"""
        migration_id: "20250308_000000_both"
        created_at: "2025-03-08T00:00:00+00:00"
        parent: initial
        kind: full_graph
        snapshot_version: "{graph().snapshot_version}"
        ops:
          - type: mx_both.Both
            feature_key: video/embeddings
        """,
    )
    run = project.run("migrations", "list")
    assert run.code == 1
    assert (
        "Both implements execute() and execute_for_feature(), but the engine calls exactly one of them"
        in run.err
    )


# ------------------------------------------------ Metaxy's plain operations() and a direct execute() call
PLAIN_OPERATIONS = """
from datetime import datetime, timezone

from metaxy_core.migrations import DataVersionReconciliation, PythonMigration


class PlainOperations(PythonMigration):
    migration_id: str = "20250309_000000_plain_operations"
    created_at: datetime = datetime(2025, 3, 9, tzinfo=timezone.utc)
    parent: str = "initial"
    from_snapshot_version: str = "{old}"
    to_snapshot_version: str = "{new}"

    def operations(self):  # Metaxy's PythonMigration: a plain method computing the operations
        return [DataVersionReconciliation()]
"""


def test_metaxy_s_plain_operations_method_computes_the_operations_and_execute_applies_directly(
    project: ProjectDir,
) -> None:
    old, new = graph(), graph(embedding="2")
    seed_all(project, [1, 2, 3])
    assert project.run("push").code == 0 and project.run("push", env={"MX_EMBEDDING": "2"}).code == 0
    mid = "20250309_000000_plain_operations"
    project.migration(
        f"{mid}.py", PLAIN_OPERATIONS.format(old=old.snapshot_version, new=new.snapshot_version)
    )
    new_code = {"MX_EMBEDDING": "2"}
    with project.session(new_code) as p:
        migration = p.chain.get(mid)
        assert [op.op_id for op in migration.operations()] == ["reconcile"]
        with p.graph.use():  # as Metaxy code does: migration.execute(store, project) outside any CLI
            planned = migration.execute(p.store, p.config.project, dry_run=True)
            assert planned.status == "planned" and planned.rows_affected == 6 and planned.succeeded
            result = migration.execute(p.store, p.config.project)
        assert result.status == "completed" and result.rows_affected == 6
        assert result.affected_features == [EMB, SCORES] and result.features_completed == 2
    status = json.loads(project.run("migrations", "status", "--format", "json", env=new_code).out)[0]
    assert status["status"] == "completed" and status["rows"] == 6
