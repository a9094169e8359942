"""Reconciliation beside a live pipeline: rows the pipeline commits while buckets are carried over win."""

from __future__ import annotations

from typing import Any

import mxtest_support as s
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from metaxy_core.migrations import MigrationExecutor, load_chain
from metaxy_core.store import bulk
from metaxy_core.store.provenance import COMMIT_ORDER, CREATED_AT, FEATURE_VERSION, WRITE_ID

MID = "20250401_000000_reconcile"
N = 90


class Pipeline:
    """New code recomputing ``video/emb`` for a few samples after each bucket the reconciliation commits.

    It writes samples spread over the whole id range (so most of them sit in buckets not yet carried), with
    a user column the reconciliation never writes (``score = -1``).
    """

    def __init__(self, store: Any, graph: Any) -> None:
        self.store, self.graph = store, graph
        self.ids = s.sample_ids(N).select(s.IDS)
        self.fresh: list[pl.DataFrame] = []
        self.commits = 0

    def after_commit(self) -> None:
        self.commits += 1
        start = (self.commits - 1) * 3
        pick = self.ids.gather([(start + k * 31) % N for k in range(3)])  # three far-apart samples
        todo = self.store.resolve_update(s.EMB, samples=pick, graph=self.graph).collect().changed
        rows = todo.join(pick, on=s.IDS, how="semi").select(pl.exclude("score", "label", "tags"))
        rows = s.user_columns(rows).with_columns(pl.lit(-1.0).alias("score"))
        if rows.height:
            self.store.write_metadata(s.EMB, rows, graph=self.graph)
            self.fresh.append(rows.select(s.IDS))

    def wrap(self, real: Any) -> Any:
        def append_frames(*args: Any, **kwargs: Any) -> int:
            written = real(*args, **kwargs)
            self.after_commit()  # the pipeline commits between two of the reconciliation's buckets
            return written

        return append_frames


def test_rows_a_pipeline_commits_between_buckets_stay_the_newest_and_resolve_update_agrees(
    store, mig_dir, monkeypatch: pytest.MonkeyPatch
):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=N, n_emb=N)
    s.write_migration(mig_dir, MID, from_=g1.snapshot_version, to=g2.snapshot_version)
    store.push_snapshot(g2, project=s.PROJECT)
    pipeline = Pipeline(store, g2)
    monkeypatch.setattr(bulk, "append_frames", pipeline.wrap(bulk.append_frames))

    [result] = MigrationExecutor(store, graph=g2, batch_rows=25).apply(load_chain(mig_dir))

    assert result.status == "completed"
    assert pipeline.commits >= 3  # at least three buckets, each followed by fresh pipeline rows
    fresh = pl.concat(pipeline.fresh).unique()
    assert fresh.height >= 6
    latest = store.read_metadata(s.EMB, graph=g2).collect()
    assert latest.height == N and latest.select(s.IDS).n_unique() == N
    assert (latest[FEATURE_VERSION] == g2.feature_version(s.EMB)).all()
    fresh_latest = latest.join(fresh, on=s.IDS, how="semi")
    assert fresh_latest.height == fresh.height
    assert (fresh_latest["score"] == -1.0).all(), "a carried copy of an old row shadows a fresh row"
    carried = latest.join(fresh, on=s.IDS, how="anti")
    assert (carried["score"] >= 0).all() and (carried[WRITE_ID].str.starts_with(f"{MID}/")).all()
    increment = store.resolve_update(s.EMB, graph=g2).collect()
    assert increment.added.height == increment.changed.height == increment.removed.height == 0

    # The race really happened: some samples were carried over (by a later bucket) after the pipeline had
    # written them fresh, so by time the carried copy is the newer one; the commit order says otherwise.
    history = store.read_metadata(s.EMB, graph=g2, include_history=True).collect()
    at_new = history.filter(pl.col(FEATURE_VERSION) == g2.feature_version(s.EMB)).join(fresh, on=s.IDS)
    both = at_new.group_by(s.IDS).agg(
        pl.col(CREATED_AT).filter(pl.col("score") == -1.0).max().alias("fresh_at"),
        pl.col(CREATED_AT).filter(pl.col("score") != -1.0).max().alias("carried_at"),
        pl.col(COMMIT_ORDER).filter(pl.col("score") == -1.0).max().alias("fresh_order"),
        pl.col(COMMIT_ORDER).filter(pl.col("score") != -1.0).max().alias("carried_order"),
    )
    shadowed_by_time = both.filter(pl.col("carried_at") > pl.col("fresh_at"))
    assert shadowed_by_time.height >= 1, both
    assert (shadowed_by_time["fresh_order"] > shadowed_by_time["carried_order"]).all()
    assert (shadowed_by_time["carried_order"] % 2 == 1).all()  # derived rows: 2*R+1


def test_a_table_written_before_commit_order_is_reconciled_and_its_carried_rows_rank_after_it(store, mig_dir):
    """An earlier version wrote the table (no commit-order column): the bulk path adds the column (nullable)
    with its first bucket and the carried rows, stamped 2*R+1, are the latest."""
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=N, n_emb=N)
    uri = store.table_uri(s.EMB)
    legacy = pl.read_delta(uri).drop(COMMIT_ORDER)
    DeltaTable(uri).delete()
    write_deltalake(uri, legacy, mode="overwrite", schema_mode="overwrite")
    assert COMMIT_ORDER not in pl.read_delta(uri).columns
    before = s.latest(store, g1, s.EMB)
    s.write_migration(mig_dir, MID, from_=g1.snapshot_version, to=g2.snapshot_version)
    store.push_snapshot(g2, project=s.PROJECT)

    MigrationExecutor(store, graph=g2, batch_rows=25).apply(load_chain(mig_dir))

    history = store.read_metadata(s.EMB, graph=g2, include_history=True).collect()
    old = history.filter(pl.col(FEATURE_VERSION) == g1.feature_version(s.EMB))
    new = history.filter(pl.col(FEATURE_VERSION) == g2.feature_version(s.EMB))
    assert old[COMMIT_ORDER].null_count() == N and new.height == N and new[COMMIT_ORDER].null_count() == 0
    assert (new[COMMIT_ORDER] % 2 == 1).all()
    after = s.latest(store, g2, s.EMB)
    user = ["score", "label", "tags"]
    assert after.select(*s.IDS, *user).equals(before.select(*s.IDS, *user))
    assert store.resolve_update(s.EMB, graph=g2).collect().changed.height == 0
