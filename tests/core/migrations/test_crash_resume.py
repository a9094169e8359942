"""A real crash: the applying process is SIGKILLed between batches of the streaming writer, then re-run."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import mxtest_support as s
import mxtest_workers
import polars as pl

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations import MigrationExecutor, load_chain, progress
from metaxy_core.migrations.lock import StoreLock
from metaxy_core.store.provenance import FEATURE_VERSION

SPAWN = multiprocessing.get_context("spawn")
MID = "20250701_000000_emb"
ROWS, BATCH = 20_000, 100


def prepare(root, migrations):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    store = DeltaMetadataStore(root, project=s.PROJECT)
    s.seed(store, g1, n_raw=ROWS, n_emb=ROWS)
    store.push_snapshot(g2, project=s.PROJECT)
    s.write_migration(migrations, MID, from_=g1.snapshot_version, to=g2.snapshot_version)
    return store, g2


def at_new_version(store, graph):
    rows = s.stored_rows(store, graph, s.EMB)
    return rows.filter(pl.col(FEATURE_VERSION) == graph.feature_version(s.EMB)).height


def test_sigkill_between_batches_then_rerun_gives_the_uninterrupted_result(tmp_path):
    store, g2 = prepare(tmp_path / "victim", tmp_path / "victim-migrations")
    before = store.table_version(s.EMB)
    child = SPAWN.Process(
        target=mxtest_workers.apply_migrations,
        args=(store.root_uri, str(tmp_path / "victim-migrations"), {"emb": "2"}, "victim", BATCH),
    )
    child.start()
    deadline = time.monotonic() + 60
    while store.table_version(s.EMB) == before:  # wait for the first batch's commit, then kill
        assert child.is_alive(), "the child finished or died before writing a batch"
        assert time.monotonic() < deadline, "the child wrote no batch within 60 s"
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL

    partial = at_new_version(store, g2)
    assert 0 < partial < ROWS, partial  # killed part-way through the step
    executor = MigrationExecutor(store, graph=g2, run_id="rerun")
    state = executor.state(MID)
    assert state.status == progress.IN_PROGRESS and not state.step_done(0, s.EMB)
    lease = StoreLock(store, "observer").lease()
    assert lease.owner == "victim" and lease.pid == child.pid  # the dead run still "holds" the lock

    [result] = executor.apply(load_chain(tmp_path / "victim-migrations"))  # no unlock needed
    assert result.status == "completed"
    assert [(st.feature_key, st.status, st.rows) for st in result.steps] == [
        (s.EMB, "completed", ROWS - partial)
    ]
    assert at_new_version(store, g2) == ROWS  # the first run's batches were not written twice

    reference, _ = prepare(tmp_path / "reference", tmp_path / "reference-migrations")
    MigrationExecutor(reference, graph=g2, run_id="reference").apply(
        load_chain(tmp_path / "reference-migrations")
    )
    resumed, uninterrupted = s.latest(store, g2, s.EMB), s.latest(reference, g2, s.EMB)
    assert resumed.height == ROWS
    assert resumed.equals(uninterrupted)
    assert store.resolve_update(s.EMB, graph=g2).counts() == {"added": 0, "changed": 0, "removed": 0}
