"""The store lock: one apply at a time, a heartbeat, expiry on the storage's clock, dead holders recognised by
host identity, a holder whose lease was taken over fenced out, and an unlock that spares live leases."""

from __future__ import annotations

import contextvars
import multiprocessing
import os
import socket
import time
from datetime import UTC, datetime, timedelta

import mxtest_support as s
import mxtest_workers
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.errors import ConfigError
from metaxy_core.migrations import LockedError, MigrationExecutor, load_chain, progress
from metaxy_core.migrations.lock import LeaseAliveError, LockLostError, StoreLock, fold_lease
from metaxy_core.store.provenance import COMMIT_ORDER

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


def _wait_until_free(store, deadline_s: float = 30.0) -> float:
    """Seconds until ``holder()`` says the lock is free (it judges ages on the storage's clock)."""
    start = time.monotonic()
    while StoreLock(store, "patient").holder() is not None:
        assert time.monotonic() - start < deadline_s, "the lease never expired"
        time.sleep(0.2)
    return time.monotonic() - start


def test_a_lease_whose_heartbeat_stopped_expires_after_its_ttl_and_is_taken_over(store):
    stalled = StoreLock(store, "stalled", ttl_seconds=5, heartbeat=False)  # a paused holder: no heartbeats
    stalled.acquire()
    started = time.monotonic()
    with pytest.raises(LockedError, match="locked by run stalled"):
        StoreLock(store, "patient").acquire()
    _wait_until_free(store)
    assert time.monotonic() - started >= 4.0  # freed by expiry (whole-second storage clocks), not earlier
    taker = StoreLock(store, "patient")
    taker.acquire()
    assert StoreLock(store, "observer").holder().owner == "patient"
    assert taker.token > stalled.token  # every acquisition gets a larger fencing token
    taker.release()


def test_a_live_holder_keeps_its_lease_far_beyond_its_ttl_by_its_heartbeat(store):
    with StoreLock(store, "busy", ttl_seconds=5) as lock:  # renews every 1.25 s in the background
        first = lock.lease().beat_version
        time.sleep(7)
        with pytest.raises(LockedError, match=r"locked by run busy .*last heartbeat \d+ s ago"):
            StoreLock(store, "impatient").acquire()
        assert lock.lease().beat_version > first
    assert StoreLock(store, "observer").holder() is None


def test_the_lease_of_a_dead_local_process_is_taken_over_at_once(store, migration):
    chain, g2 = migration
    child = SPAWN.Process(target=mxtest_workers.take_lock_and_die, args=(store.root_uri, "dead-run"))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    lease = StoreLock(store, "observer").lease()
    assert lease is not None and lease.owner == "dead-run" and lease.pid == child.pid  # never released...
    assert lease.ttl_seconds == 3600  # ...and far from expiring
    assert StoreLock(store, "observer").holder() is None  # but its process is gone
    [result] = MigrationExecutor(store, graph=g2, run_id="after-crash").apply(chain)
    assert result.status == "completed"


def test_a_dead_pid_of_another_container_with_the_same_hostname_is_not_taken_over(store):
    """Containers sharing a hostname (hostNetwork) have their own pids: a pid gone here may run there."""
    child = SPAWN.Process(
        target=mxtest_workers.take_lock_and_die, args=(store.root_uri, "other-container", True, 5)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    lease = StoreLock(store, "observer").lease()
    assert lease.host == socket.gethostname() and lease.pid == child.pid  # same hostname, pid gone here
    with pytest.raises(LockedError, match="locked by run other-container"):
        StoreLock(store, "next").acquire()  # judged by its heartbeat only...
    _wait_until_free(store)  # ...which stopped: it expires after its TTL
    StoreLock(store, "next").acquire()


def test_unlock_refuses_a_live_lease_naming_its_holder_unless_forced(store):
    holder = StoreLock(store, "stuck")
    holder.acquire()
    with pytest.raises(LockedError):
        StoreLock(store, "next").acquire()
    with pytest.raises(LeaseAliveError) as refused:
        StoreLock(store, "admin").force_release()
    message = str(refused.value)
    assert message.startswith(
        f"the migration lock is held by run stuck ({socket.gethostname()}, pid {os.getpid()}), whose last "
        "heartbeat was "
    )
    assert "`metaxy migrations unlock --force` releases it anyway" in message
    assert StoreLock(store, "observer").holder().owner == "stuck"
    released = StoreLock(store, "admin").force_release(force=True)
    assert released is not None and released.owner == "stuck"
    assert StoreLock(store, "admin").force_release() is None  # nothing left to release
    with pytest.raises(LockLostError, match="released"):
        holder.renew()  # the old holder notices at its next lease check...
    StoreLock(store, "next").acquire()
    assert StoreLock(store, "observer").holder().owner == "next"


def test_unlock_releases_a_lease_whose_heartbeat_stopped_without_force(store):
    StoreLock(store, "silent", ttl_seconds=40, heartbeat=False).acquire()  # renews every 10 s, if alive
    with pytest.raises(LeaseAliveError):
        StoreLock(store, "admin").force_release()  # fresh: 0 s ago
    time.sleep(21)  # two heartbeats missed (on the storage's clock): the holder is gone or stalled
    released = StoreLock(store, "admin").force_release()
    assert released is not None and released.owner == "silent"


def test_a_holder_whose_lease_was_taken_over_cannot_write(store):
    g = s.make_graph(emb="1")
    s.seed(store, g, n_raw=4, n_emb=0)
    stalled = StoreLock(store, "stalled", ttl_seconds=5, heartbeat=False)
    holder = contextvars.copy_context()  # the stalled holder's own context (its lease fences its commits)
    holder.run(stalled.acquire)
    holder.run(store.write_metadata, s.RAW, s.raw_rows(2, start=100), graph=g)  # inside its lease: accepted
    _wait_until_free(store)
    with StoreLock(store, "taker"):
        before = store.table_version(s.RAW)
        with pytest.raises(LockLostError) as lost:  # the old holder's next commit
            holder.run(store.write_metadata, s.RAW, s.raw_rows(1, start=200), graph=g)
        assert "run stalled lost the migration lock" in str(lost.value)
        assert "run taker" in str(lost.value) and "took over" in str(lost.value)
        assert store.table_version(s.RAW) == before  # nothing was written
    holder.run(stalled.release)  # nothing of its own left to release; no error


def test_ttl_and_heartbeat_below_their_minimum_are_refused_naming_the_setting(store):
    with pytest.raises(ConfigError, match=r"^lock_ttl_seconds: 1 s is too short.* set it to 5 or more"):
        StoreLock(store, "hasty", ttl_seconds=1)
    with pytest.raises(
        ConfigError, match=r"^lock_heartbeat_seconds: 30 s does not fit lock_ttl_seconds = 60"
    ):
        StoreLock(store, "hasty", ttl_seconds=60, heartbeat_seconds=30)


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


def test_on_s3_the_lease_is_fenced_and_aged_on_the_servers_clock(s3, monkeypatch):
    """The same lease on a real S3 API (moto): its age comes from LastModified, not from any host's clock."""
    store = DeltaMetadataStore(s3.root, s3.storage_options, project=s.PROJECT)
    monkeypatch.setenv("METAXY_CLOCK_OFFSET_SECONDS", str(-2 * 3600))  # this host's clock is 2 h behind
    stalled = StoreLock(store, "stalled", ttl_seconds=5, heartbeat=False)
    holder = contextvars.copy_context()
    holder.run(stalled.acquire)
    monkeypatch.setenv("METAXY_CLOCK_OFFSET_SECONDS", str(2 * 3600))  # ...and this one's 2 h ahead
    with pytest.raises(LockedError, match="last heartbeat [0-2] s ago"):
        StoreLock(store, "patient").acquire()
    waited = _wait_until_free(store)
    assert 3.0 <= waited <= 12.0  # about the TTL (S3 times are whole seconds), not hours either way
    g = s.make_graph(emb="1")
    with StoreLock(store, "patient"):
        with pytest.raises(LockLostError, match="run patient"):
            holder.run(store.write_metadata, s.RAW, s.raw_rows(2), graph=g)
    assert not store.has_metadata(s.RAW)  # the fenced-out holder created nothing


def test_the_lease_folds_in_commit_order_and_its_last_renewer_is_the_one_whose_liveness_counts():
    """Events in commit order: a later run's acquire after a release starts a new lease; a process of the
    same run joining keeps the token and becomes the process judged alive; stale events change nothing."""
    at = datetime(2025, 1, 1, tzinfo=UTC)

    def ev(event, owner, token, version, pid, at_offset_h=0.0):
        when = at + timedelta(hours=at_offset_h)
        return {
            "event": event,
            "owner": owner,
            "token": token,
            COMMIT_ORDER: 2 * version,
            "host": "h",
            "pid": pid,
            "host_id": "h/boot/ns",
            "process": f"p{pid}",
            "at": when,
            "expires_at": when + timedelta(hours=1),
            "ttl_s": 3600.0,
            "beat_s": 900.0,
        }

    rows = [
        ev("acquire", "run-a", 0, 0, 10, at_offset_h=+2),  # a fast clock: its time says nothing
        ev("release", "run-a", 0, 1, 10, at_offset_h=+2),
        ev("acquire", "run-b", 2, 2, 20, at_offset_h=-2),  # a slow clock: still the newest lease
        ev("renew", "run-a", 0, 3, 10),  # a stale event of the old lease: ignored
        ev("acquire", "run-b", 2, 4, 21),  # another process of run-b joins
    ]
    lease = fold_lease(rows)
    assert (lease.owner, lease.token, lease.pid, lease.beat_version) == ("run-b", 2, 21, 4)
    assert fold_lease([*rows, ev("release", "run-b", 2, 5, 21)]) is None
