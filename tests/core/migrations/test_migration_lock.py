"""The store lock: one apply at a time, with expiry, dead-holder detection and a manual release."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time

import mxtest_support as s
import mxtest_workers
import pytest

from metaxy_core.migrations import LockedError, MigrationExecutor, load_chain, progress
from metaxy_core.migrations.lock import StoreLock

SPAWN = multiprocessing.get_context("spawn")
MID = "20250601_000000_emb"


@pytest.fixture
def migration(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=10, n_emb=10)
    store.push_snapshot(g2, project=s.PROJECT)
    s.write_migration(mig_dir, MID, from_=g1.snapshot_version, to=g2.snapshot_version)
    return load_chain(mig_dir), g2


def test_a_second_executor_is_refused_while_the_first_holds_the_lock(store, migration):
    chain, g2 = migration
    first = MigrationExecutor(store, graph=g2, run_id="run-first")
    first.lock.acquire()
    second = MigrationExecutor(store, graph=g2, run_id="run-second")
    with pytest.raises(LockedError) as info:
        second.apply(chain)
    message = str(info.value)
    assert message.startswith(
        f"the store is locked by run run-first ({socket.gethostname()}, pid {os.getpid()}) since "
    )
    assert " UTC (lease expires " in message
    assert message.endswith("wait for it to finish, or if it is dead run `metaxy migrations unlock`")
    assert info.value.holder.owner == "run-first"
    assert second.state(MID).status == progress.NOT_STARTED  # nothing ran
    # the holder itself may apply (the lock is re-entrant for its owner) and then frees it
    assert first.apply(chain)[0].status == "completed"
    first.lock.release()
    assert StoreLock(store, "anyone").holder() is None


def test_an_expired_lease_is_taken_over(store):
    StoreLock(
        store, "short-lived", ttl_seconds=1.5
    ).acquire()  # this process stays alive: only expiry frees it
    lease = StoreLock(store, "observer").holder()
    assert lease.owner == "short-lived"
    with pytest.raises(LockedError, match="locked by run short-lived"):
        StoreLock(store, "patient").acquire()
    while StoreLock(store, "patient").holder() is not None:
        assert time.time() < lease.expires_at.timestamp() + 5
        time.sleep(0.05)
    assert time.time() >= lease.expires_at.timestamp()  # freed by expiry, not earlier
    StoreLock(store, "patient").acquire()
    assert StoreLock(store, "observer").holder().owner == "patient"


def test_the_lease_of_a_dead_local_process_is_taken_over_at_once(store, migration):
    chain, g2 = migration
    child = SPAWN.Process(target=mxtest_workers.take_lock_and_die, args=(store.root_uri, "dead-run"))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    _, lease = StoreLock(store, "observer")._state()
    assert lease is not None and lease.owner == "dead-run" and lease.pid == child.pid  # never released...
    assert lease.expires_at.timestamp() > time.time() + 3000  # ...and far from expiring
    assert StoreLock(store, "observer").holder() is None  # but its process is gone
    [result] = MigrationExecutor(store, graph=g2, run_id="after-crash").apply(chain)
    assert result.status == "completed"


def test_force_release_frees_a_live_lease(store):
    StoreLock(store, "stuck", ttl_seconds=3600).acquire()
    with pytest.raises(LockedError):
        StoreLock(store, "next").acquire()
    released = StoreLock(store, "admin").force_release()
    assert released is not None and released.owner == "stuck"
    assert StoreLock(store, "admin").force_release() is None  # nothing left to release
    StoreLock(store, "next").acquire()
    assert StoreLock(store, "observer").holder().owner == "next"


def test_the_lock_is_reentrant_for_its_owner(store):
    lock = StoreLock(store, "me")
    with lock:
        with lock:
            assert lock.holder().owner == "me"
        assert lock.holder().owner == "me"
    assert lock.holder() is None


@pytest.mark.parametrize("lock_table", ["absent", "present"])
def test_processes_racing_for_the_lock_have_exactly_one_winner(store, lock_table):
    if lock_table == "present":  # contenders race on one commit version rather than on creating the table
        with StoreLock(store, "earlier-run"):
            pass
    contenders = 4
    start, done = SPAWN.Barrier(contenders), SPAWN.Barrier(contenders)
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=mxtest_workers.race_for_lock, args=(store.root_uri, f"racer-{i}", start, done, results)
        )
        for i in range(contenders)
    ]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=90) for _ in procs)
    for p in procs:
        p.join(30)
    winners = [owner for owner, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    assert all(
        outcome == f"locked by {winners[0]}" for owner, outcome in outcomes.items() if owner != winners[0]
    ), outcomes
