"""Rollback: applied migrations are undone by hiding their write ids; nothing is deleted."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.migrations import MigrationExecutor, load_chain
from metaxy_core.migrations.rollback import RollbackRefused, rollback, rollback_migration
from metaxy_core.store.provenance import COMMIT_ORDER, CREATED_AT, WRITE_ID
from metaxy_core.testing import video_graph, write_migration

N = 200


def build_graph(emb: str, tags: str = "1") -> FeatureGraph:
    return video_graph(embedding=emb, downstream="video/tags", downstream_version=tags)


@pytest.fixture
def setup(tmp_path: Path):
    g1, g2, g3 = build_graph("1"), build_graph("2"), build_graph("2", tags="2")
    store = DeltaMetadataStore(tmp_path / "store")
    raw = pl.DataFrame(
        {"sample_uid": [f"s{i:04d}" for i in range(N)], "path": [f"/v/{i}.mp4" for i in range(N)]}
    )
    raw = raw.with_columns(
        metaxy_provenance_by_field=pl.struct(frames=pl.col("path") + "#f", audio=pl.col("path") + "#a")
    )
    with g1.use():
        store.write_metadata("video/raw", raw)
        store.write_metadata(
            "video/embeddings", store.resolve_update("video/embeddings").added.with_columns(dim=pl.lit(512))
        )
        store.write_metadata(
            "video/tags", store.resolve_update("video/tags").added.with_columns(label=pl.lit("cat"))
        )
        store.push_snapshot(g1)
    store.push_snapshot(g2)
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write_migration(migrations, "20250101_000000_emb", from_snapshot=g1, to_snapshot=g2)
    write_migration(
        migrations, "20250102_000000_tags", parent="20250101_000000_emb", from_snapshot=g2, to_snapshot=g3
    )
    return store, load_chain(migrations), (g1, g2, g3)


def latest_view(store: DeltaMetadataStore, graph: FeatureGraph, key: str) -> pl.DataFrame:
    """Newest row per sample across feature versions, without volatile columns."""
    history = store.read_metadata(key, include_history=True, graph=graph)
    view = store.latest_per_sample(history, ["sample_uid"]).collect()
    return view.drop(CREATED_AT, WRITE_ID, COMMIT_ORDER).sort("sample_uid")


def table_versions(store: DeltaMetadataStore) -> dict[str, int | None]:
    keys = ["video/raw", "video/embeddings", "video/tags"]
    out = {k: store.table_version(k) for k in keys}
    out.update(
        {
            s: store.table_version(system=s)
            for s in ("snapshots", "migration_events", "lock", "retracted_writes")
        }
    )
    return out


def test_rollback_restores_the_pre_apply_view_and_reapply_matches_the_first_apply(setup) -> None:
    store, chain, (_, _, g3) = setup
    executor = MigrationExecutor(store, graph=g3)
    before = {k: latest_view(store, g3, k) for k in ("video/embeddings", "video/tags")}
    store.push_snapshot(g3)
    executor.apply(chain)
    applied = {k: latest_view(store, g3, k) for k in before}
    assert all(not applied[k].equals(before[k]) for k in before)

    results = rollback(executor, chain, "20250101_000000_emb")
    assert [r.migration_id for r in results] == ["20250102_000000_tags", "20250101_000000_emb"]
    # The first migration also carried the downstream video/tags over (its version changed with embeddings).
    assert {f.feature_key: (f.hidden, f.restored) for f in results[1].features} == {
        "video/embeddings": (N, N),
        "video/tags": (N, N),
    }
    assert {f.feature_key: (f.hidden, f.restored) for f in results[0].features} == {"video/tags": (N, N)}
    for key in before:
        assert latest_view(store, g3, key).equals(before[key]), key
    assert {s.migration_id: s.status for s in map(executor.state, chain.ids)} == {
        "20250101_000000_emb": "not_started",
        "20250102_000000_tags": "not_started",
    }
    assert store.resolve_update("video/embeddings", graph=g3).counts()["changed"] == N

    executor.apply(chain)
    for key in before:
        assert latest_view(store, g3, key).equals(applied[key]), key
    assert store.resolve_update("video/tags", graph=g3).counts() == {"added": 0, "changed": 0, "removed": 0}


def test_rolled_back_rows_stay_in_the_table_history(setup) -> None:
    store, chain, (_, g2, _) = setup
    executor = MigrationExecutor(store, graph=g2)
    executor.apply(chain, "20250101_000000_emb")
    rows_before = store.read_metadata("video/embeddings", include_history=True, graph=g2).collect().height
    rollback(executor, chain)
    raw_table = pl.scan_delta(store.table_uri("video/embeddings")).collect()
    assert raw_table.height == rows_before
    assert raw_table.filter(pl.col(WRITE_ID).str.starts_with("20250101_000000_emb/")).height == N


def test_single_rollback_is_refused_while_a_later_migration_is_applied(setup) -> None:
    store, chain, (_, _, g3) = setup
    store.push_snapshot(g3)
    executor = MigrationExecutor(store, graph=g3)
    executor.apply(chain)
    versions = table_versions(store)
    with pytest.raises(
        RollbackRefused, match=r"later migration\(s\) 20250102_000000_tags were applied on top of it"
    ):
        rollback_migration(executor, chain, "20250101_000000_emb")
    assert table_versions(store) == versions


def test_rollback_keeps_rows_other_writers_appended_after_the_migration(setup) -> None:
    store, chain, (_, g2, _) = setup
    executor = MigrationExecutor(store, graph=g2)
    executor.apply(chain, "20250101_000000_emb")
    with g2.use():
        fresh = store.resolve_update("video/embeddings").collect()
        assert fresh.changed.height == 0
        # Another writer recomputes five samples at the new version, with a different user value.
        redo = store.read_metadata("video/embeddings").head(5).collect().with_columns(dim=pl.lit(1024))
        store.write_metadata(
            "video/embeddings", redo.select("sample_uid", "dim", "metaxy_provenance_by_field")
        )
    rollback(executor, chain)
    view = latest_view(store, g2, "video/embeddings")
    assert view.filter(pl.col("dim") == 1024).height == 5
    assert view.filter(pl.col("dim") == 512).height == N - 5


def test_rollback_dry_run_counts_rows_and_writes_nothing(setup) -> None:
    store, chain, (_, g2, _) = setup
    executor = MigrationExecutor(store, graph=g2)
    executor.apply(chain, "20250101_000000_emb")
    versions = table_versions(store)
    [plan] = rollback(executor, chain, dry_run=True)
    assert plan.status == "planned"
    assert [(f.feature_key, f.hidden, f.restored) for f in plan.features] == [
        ("video/embeddings", N, N),
        ("video/tags", N, N),
    ]
    assert table_versions(store) == versions
    assert executor.state("20250101_000000_emb").status == "completed"


def test_a_dry_run_counts_downstream_rows_whose_upstream_is_carried_over_in_the_same_migration(setup) -> None:
    store, chain, (_, g2, _) = setup
    executor = MigrationExecutor(store, graph=g2)
    [plan] = executor.apply(chain, "20250101_000000_emb", dry_run=True)
    assert {s.feature_key: s.rows for s in plan.steps} == {"video/embeddings": N, "video/tags": N}
    [applied] = executor.apply(chain, "20250101_000000_emb")
    assert {s.feature_key: s.rows for s in applied.steps} == {"video/embeddings": N, "video/tags": N}
