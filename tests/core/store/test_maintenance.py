"""Delta maintenance on real tables: compaction, checkpoints, vacuum, the CLI verb and the migration
operation."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from metaxy_core import DeltaMetadataStore, FeatureDep, FeatureGraph, FeatureSpec, FieldSpec, MetaxyConfig
from metaxy_core.cli.app import main
from metaxy_core.migrations import DiffMigration, FullGraphMigration, MigrationExecutor
from metaxy_core.migrations.ops import DeltaMaintenance, build_operation
from metaxy_core.store.provenance import CREATED_AT, PROVENANCE_BY_FIELD

RAW, EMB = "m/raw", "m/emb"
APPENDS = 60


def graph() -> FeatureGraph:
    g = FeatureGraph()
    g.add(FeatureSpec(key=RAW, id_columns=["uid"], fields=[FieldSpec(key="x")]))
    g.add(
        FeatureSpec(key=EMB, id_columns=["uid"], deps=[FeatureDep(feature=RAW)], fields=[FieldSpec(key="y")])
    )
    return g


def raw(start: int, n: int) -> pl.DataFrame:
    uid = pl.int_range(start, start + n, eager=True).cast(pl.String).str.zfill(6).alias("uid")
    return uid.to_frame().with_columns(
        pl.struct(pl.format("x{}", "uid").alias("x")).alias(PROVENANCE_BY_FIELD)
    )


def files(store: DeltaMetadataStore, feature: str) -> int:
    return len(DeltaTable(store.table_uri(feature)).file_uris())


def latest(store: DeltaMetadataStore, g: FeatureGraph, feature: str) -> pl.DataFrame:
    return store.read_metadata(feature, graph=g).collect().sort("uid")


@pytest.fixture
def appended(tmp_path: Path) -> tuple[DeltaMetadataStore, FeatureGraph]:
    """A root table made of many small appends (and a rewrite of some samples), plus a downstream table."""
    g = graph()
    store = DeltaMetadataStore(tmp_path / "store", project="m")
    for i in range(APPENDS):
        store.write_metadata(RAW, raw(i * 10, 10), graph=g)
    store.write_metadata(RAW, raw(0, 5), graph=g)  # newer rows of samples 0-4
    store.write_metadata(EMB, store.resolve_update(EMB, graph=g).added.collect(), graph=g)
    store.push_snapshot(g)
    return store, g


def test_optimize_compacts_without_changing_any_row(appended):
    store, g = appended
    before = latest(store, g, RAW)
    history = store.read_metadata(RAW, graph=g, include_history=True).collect().sort("uid", CREATED_AT)
    assert files(store, RAW) == APPENDS + 1
    [report] = store.optimize(RAW)
    assert (
        report.files_before == APPENDS + 1 and report.files_after == 1 and report.files_removed == APPENDS + 1
    )
    assert files(store, RAW) == 1
    assert latest(store, g, RAW).equals(before)
    assert (
        store.read_metadata(RAW, graph=g, include_history=True)
        .collect()
        .sort("uid", CREATED_AT)
        .equals(history)
    )
    assert store.resolve_update(EMB, graph=g).counts() == {"added": 0, "changed": 0, "removed": 0}
    [again] = store.optimize(RAW)  # idempotent
    assert again.files_after == 1 and again.version_after == again.version_before


def test_optimize_keeps_rolled_back_writes_hidden(appended):
    from metaxy_core.store.system import retract_writes

    store, g = appended
    last_write = (
        store.read_metadata(RAW, graph=g).collect().filter(pl.col("uid") == "000003")["metaxy_write_id"][0]
    )
    retract_writes(store, g.spec(RAW).key, [last_write], retracted=True, reason="test")
    before = latest(store, g, RAW)
    store.optimize(RAW, z_order=True)
    assert latest(store, g, RAW).equals(before)


def test_optimize_all_tables_covers_system_tables_and_z_orders_on_ids(appended):
    store, g = appended
    with g.use():
        reports = store.optimize(z_order=True)
    labels = {r.table for r in reports}
    assert {RAW, EMB, "_metaxy_system/snapshots"} <= labels
    raw_report = next(r for r in reports if r.table == RAW)
    assert raw_report.detail == {"z_order": ["uid"]} and raw_report.files_after == 1


def test_checkpoint_lets_a_table_open_from_one_parquet_file(appended):
    store, g = appended
    log = Path(store.table_uri(RAW)) / "_delta_log"
    before = {p.name for p in log.glob("*.checkpoint.parquet")}
    reports = store.checkpoint()
    assert {r.table for r in reports} >= {RAW, EMB}
    version = DeltaTable(store.table_uri(RAW)).version()
    assert f"{version:020d}.checkpoint.parquet" in {p.name for p in log.glob("*.checkpoint.parquet")} - before
    assert latest(store, g, RAW).height == APPENDS * 10


def test_vacuum_dry_run_lists_and_vacuum_deletes_replaced_files(appended):
    store, g = appended
    store.optimize(RAW)
    data = Path(store.table_uri(RAW))
    parquet_before = len(list(data.glob("*.parquet")))
    [dry] = store.vacuum(RAW, retention_hours=0, dry_run=True)
    assert dry.files_removed == APPENDS + 1 and len(list(data.glob("*.parquet"))) == parquet_before
    [done] = store.vacuum(RAW, retention_hours=0)
    assert done.files_removed == APPENDS + 1 and len(list(data.glob("*.parquet"))) == 1
    assert latest(store, g, RAW).height == APPENDS * 10
    [nothing] = store.vacuum(RAW, retention_hours=0)
    assert nothing.files_removed == 0


def test_vacuum_removes_files_orphaned_by_an_interrupted_write(appended):
    store, _ = appended
    orphan = Path(store.table_uri(RAW)) / "part-00000-orphan-c000.zstd.parquet"
    raw(0, 3).write_parquet(orphan)
    old = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    os.utime(orphan, (old, old))
    [report] = store.vacuum(RAW)  # default one-week retention: the orphan is older
    assert report.files_removed == 1 and not orphan.exists()


def test_maintenance_operation_in_a_migration(appended, tmp_path):
    store, g = appended
    op = build_operation(
        {"type": "metaxy_core.migrations.ops.DeltaMaintenance", "feature_key": RAW, "vacuum_hours": 0}
    )
    assert isinstance(op, DeltaMaintenance) and op.op_id == "maintenance"
    migration = FullGraphMigration(
        migration_id="20250101_000000_maintain",
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        ops=[op.model_dump(exclude_none=True)],
    )
    executor = MigrationExecutor(store, graph=g, run_id="t")
    version = store.table_version(RAW)
    [plan] = executor.apply_migration(migration, dry_run=True).steps
    assert (
        plan.status == "planned"
        and "would be compacted" in plan.note
        and "vacuum would delete 0" in plan.note
    )
    assert store.table_version(RAW) == version and files(store, RAW) == APPENDS + 1
    result = executor.apply_migration(migration)
    [step] = result.steps
    assert result.status == "completed" and step.status == "completed" and step.rows == 0
    assert f"compacted {APPENDS + 1} -> 1" in step.note
    assert files(store, RAW) == 1 and len(list(Path(store.table_uri(RAW)).glob("*.parquet"))) == 1
    assert executor.apply_migration(migration).status == "already_applied"


def test_maintenance_operation_without_feature_covers_the_graph(appended):
    store, g = appended
    migration = DiffMigration(
        migration_id="20250101_000001_all",
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        from_snapshot_version=g.snapshot_version,
        to_snapshot_version=g.snapshot_version,
        ops=[{"type": "metaxy_core.migrations.ops.DeltaMaintenance"}],
    )
    steps = MigrationExecutor(store, graph=g, run_id="t").apply_migration(migration).steps
    assert [s.feature_key for s in steps] == [RAW, EMB] and all(s.status == "completed" for s in steps)
    assert files(store, RAW) == 1


FEATURES = f"""
from metaxy_core import Feature, FeatureDep, FeatureSpec, FieldSpec

class Raw(Feature, spec=FeatureSpec(key="{RAW}", id_columns=["uid"], fields=[FieldSpec(key="x")])):
    pass
"""


def test_cli_store_maintain(tmp_path, monkeypatch, capsys):
    (tmp_path / "metaxy.toml").write_text('project = "m"\nentrypoints = ["maint_features"]\n')
    (tmp_path / "maint_features.py").write_text(FEATURES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("maint_features", None)
    with FeatureGraph().use():
        config = MetaxyConfig.load(tmp_path / "metaxy.toml")
        g = config.load_features()
        store = config.get_store()
        for i in range(12):
            store.write_metadata(RAW, raw(i * 5, 5), graph=g)
        store.push_snapshot(g)
    capsys.readouterr()

    def run(*args: str) -> tuple[int, str]:
        sys.modules.pop("maint_features", None)
        with FeatureGraph().use():
            code = main(list(args))
        return code, capsys.readouterr().out

    code, out = run("store", "maintain", "--vacuum-hours", "0", "--dry-run", "--format", "json")
    reports = json.loads(out)
    assert code == 0 and files(store, RAW) == 12
    assert {(r["table"], r["action"]) for r in reports} >= {
        (RAW, "optimize"),
        (RAW, "checkpoint"),
        (RAW, "vacuum"),
    }
    assert all(r["dry_run"] for r in reports)
    code, out = run("store", "maintain", "--vacuum-hours", "0")
    assert code == 0 and "Store maintenance" in out and RAW in out
    assert files(store, RAW) == 1 and len(list(Path(store.table_uri(RAW)).glob("*.parquet"))) == 1
    sys.modules.pop("maint_features", None)


def test_event_tables_are_compacted_once_fragmented(tmp_path):
    from metaxy_core.migrations import progress
    from metaxy_core.store.maintenance import compact_fragmented_system_tables

    store = DeltaMetadataStore(tmp_path / "store", project="m")
    for i in range(70):
        progress.record(
            store, project="m", migration_id=f"20250101_000000_m{i % 7}", status="started", run_id="r"
        )
    before = progress.read_states(store, "m")
    uri = store.system_table_uri(progress.EVENTS)
    assert len(DeltaTable(uri).file_uris()) == 70
    assert compact_fragmented_system_tables(store, min_files=100) == []
    [report] = compact_fragmented_system_tables(store)
    assert report.files_before == 70 and report.files_after == 1
    assert progress.read_states(store, "m") == before  # same log after compaction (read again: new version)
    assert compact_fragmented_system_tables(store) == []
