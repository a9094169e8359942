"""One apply at a time per store: a fenced lease in a Delta system table, taken by compare-and-swap.

**Events in commit order.** The lock table holds ``acquire``, ``renew`` and ``release`` events. Each is one
commit made at exactly the next version of the table (:func:`~metaxy_core.store.system.cas_append`): a
process reads the table at version N, decides, and commits as N+1, or is refused because someone else
committed first, and reads again. Events are folded in commit order; their timestamps are information only.

**Token.** A lease is identified by the lock table's version of its ``acquire`` commit, which grows with every
acquisition. While a lease is held, every commit the store makes in that context carries the token as a
Delta app transaction (``metaxy-lease/<project>``) and first checks that the table's log has no newer token
and that the lock table still shows this lease (:class:`~metaxy_core.store.scope.Fence`). A holder whose
lease was taken over therefore cannot write: its next commit is refused with :class:`LockLostError`, and
Delta refuses it too if the new holder's commit to that table lands between the check and the commit.

**Heartbeat.** A background thread renews the lease every ``heartbeat`` seconds (default a quarter of the
TTL), so a live holder keeps its lease however long a step runs; a stalled holder (a paused VM, a process
stopped or cut off from the store) stops renewing and its lease expires.

**Expiry on one clock.** A lease's age is judged on the storage's clock: the modification time the store
gives a probe object written by the contender, minus that of the holder's last heartbeat commit
(:func:`~metaxy_core.store.system.storage_now`, :func:`~metaxy_core.store.system.commit_time`). The hosts'
clocks are never compared, so a host whose clock is hours off neither steals a live lease nor keeps a dead
one.

**Dead holders.** A holder recorded under exactly this host identity (hostname, boot id, pid namespace: see
:func:`metaxy_core._process.host_identity`) whose pid is gone is recognised at once, so re-running after
``kill -9`` just works; a holder anywhere else (another machine, another container sharing the hostname)
is judged by its heartbeat only. ``metaxy migrations unlock`` releases a lease whose heartbeat stopped, and
refuses a live one unless forced.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import polars as pl

from metaxy_core import _process
from metaxy_core._process import current_pid, hostname, now, process_id
from metaxy_core.errors import MetaxyError
from metaxy_core.migrations.lease import MIN_BEATS_PER_TTL as MIN_BEATS_PER_TTL
from metaxy_core.migrations.lease import MIN_LOCK_TTL_SECONDS as MIN_LOCK_TTL_SECONDS
from metaxy_core.migrations.lease import LeaseAge as LeaseAge
from metaxy_core.migrations.lease import LeaseAliveError as LeaseAliveError
from metaxy_core.migrations.lease import LeaseInfo as LeaseInfo
from metaxy_core.migrations.lease import LockedError as LockedError
from metaxy_core.migrations.lease import LockLostError as LockLostError
from metaxy_core.migrations.lease import check_lock_settings as check_lock_settings
from metaxy_core.migrations.lease import fold_lease as fold_lease
from metaxy_core.migrations.lease import lock_settings_problem as lock_settings_problem
from metaxy_core.store.order import in_commit_order
from metaxy_core.store.scope import Fence, fenced
from metaxy_core.store.system import (
    LOCK,
    LOCK_SCHEMA,
    CommitConflict,
    cas_append,
    commit_time,
    committed_after,
    next_version,
    open_system_table,
    read_system,
    storage_now,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from metaxy_core.store.delta import DeltaMetadataStore

logger = logging.getLogger("metaxy.migrations")

#: a heartbeat younger than this many intervals means the holder is alive: ``unlock`` refuses without force
_FRESH_BEATS = 2


class StoreLock:
    """Lease on a store's migrations for ``owner`` (a run id). Re-entrant for the same owner.

    Args:
        store: the store whose migrations it guards.
        owner: the run id; processes of one run share its lease (Dagster runs each op in a process).
        ttl_seconds: lease period (default: the store's ``lock_ttl_seconds``).
        heartbeat_seconds: renewal period (default: the store's ``lock_heartbeat_seconds``, else TTL/4).
        heartbeat: renew in a background thread while held (tests turn it off to play a stalled holder).
        member: a worker of a run spread over processes (:mod:`metaxy_core.migrations.units`): it only
            joins the run's live lease (never starts one) and leaves it without releasing it, so the run's
            other workers carry on under the same fencing token.
        pid: the process whose liveness stands for the lease on this host (default: this one). A worker
            gives its run's coordinator, which outlives it: a lease whose last renewal came from a finished
            worker would otherwise look abandoned to a contender on the same host.

    Raises:
        ConfigError: the periods are unsafe (see :func:`check_lock_settings`).
    """

    def __init__(
        self,
        store: DeltaMetadataStore,
        owner: str,
        *,
        ttl_seconds: float | None = None,
        heartbeat_seconds: float | None = None,
        heartbeat: bool = True,
        member: bool = False,
        pid: int | None = None,
    ) -> None:
        self.store = store
        self.owner = owner
        self.member = member
        self.pid = pid
        ttl = ttl_seconds if ttl_seconds is not None else store.lock_ttl_seconds
        beat = heartbeat_seconds if heartbeat_seconds is not None else store.lock_heartbeat_seconds
        check_lock_settings(ttl, beat)
        self.ttl = timedelta(seconds=ttl)
        self.heartbeat_seconds = beat if beat is not None else ttl / (MIN_BEATS_PER_TTL + 1)
        self.uri = store.system_table_uri(LOCK)
        self.app_id = f"metaxy-lease/{store.project}"
        self._heartbeat = heartbeat
        self._depth = 0
        self._token: int | None = None
        self._lost: LockLostError | None = None
        self._commits = threading.Lock()  # the heartbeat thread and this one never race each other
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._fence_scope: contextlib.ExitStack | None = None
        # The lock table version at which this process last saw its lease as its own (its own acquire/renew
        # commit, or a read), and the table as this process last committed to it: while no commit follows
        # that version (one HEAD of the next log file), the lease is still ours without reading the table.
        self._seen: int | None = None
        self._table: DeltaTable | None = None  # only under self._commits: pyo3 objects are not shared

    # ---------------------------------------------------------------- reading
    def _state(self) -> tuple[DeltaTable | None, LeaseInfo | None]:
        table = open_system_table(self.store, LOCK, for_commit=True)  # callers may commit to it
        if table is None:
            return None, None
        df = read_system(self.store, LOCK, table=table, where=pl.col("project") == self.store.project)
        assert df is not None  # a table was given: its rows were read
        return table, fold_lease(in_commit_order(df, "at").to_dicts())

    def lease(self) -> LeaseInfo | None:
        """The lease the lock table records, live or not (None: released, or never taken)."""
        return self._state()[1]

    def age(self, lease: LeaseInfo) -> LeaseAge:
        """How old ``lease``'s last heartbeat is, on the storage's clock."""
        if lease.beat_version is None or lease.ttl_seconds is None:
            return LeaseAge(None, None)
        beat = commit_time(self.store, LOCK, lease.beat_version)
        current = storage_now(self.store)
        if beat is None:  # its log file was cleaned up after its retention: very old
            return LeaseAge(float("inf"), current)
        return LeaseAge((current - beat).total_seconds(), beat + timedelta(seconds=lease.ttl_seconds))

    def _expired(self, lease: LeaseInfo, age: LeaseAge) -> bool:
        if not age.known:  # a lease written by an earlier version: its own clock's expiry is all there is
            return lease.expires_at <= now()
        assert age.seconds is not None and lease.ttl_seconds is not None
        return age.seconds > lease.ttl_seconds

    def _free_for_me(self, lease: LeaseInfo | None) -> tuple[bool, LeaseAge | None]:
        """Whether this owner may take ``lease`` now (and the age that was judged, if any)."""
        if (
            lease is None
            or lease.owner == self.owner
            or _process.dead_local_process(lease.host_id, lease.pid)
        ):
            return True, None
        age = self.age(lease)
        return self._expired(lease, age), age

    def holder(self) -> LeaseInfo | None:
        """The live lease, if any (expired leases and dead local holders count as free)."""
        lease = self.lease()
        if lease is None or _process.dead_local_process(lease.host_id, lease.pid):
            return None
        return None if self._expired(lease, self.age(lease)) else lease

    def _ours(self, lease: LeaseInfo | None) -> bool:
        return lease is not None and lease.owner == self.owner and lease.token == self._token

    @property
    def token(self) -> int | None:
        """The fencing token of the lease held (None when not held)."""
        return self._token if self._depth else None

    # ---------------------------------------------------------------- writing
    def _event(self, event: str, *, owner: str | None = None, token: int | None = None) -> pl.DataFrame:
        at = now()
        return pl.DataFrame(
            [
                {
                    "project": self.store.project,
                    "event": event,
                    "owner": owner or self.owner,
                    "host": hostname(),
                    "pid": self.pid if self.pid is not None else current_pid(),
                    "at": at,
                    "expires_at": at + self.ttl,
                    "token": token,
                    "ttl_s": self.ttl.total_seconds(),
                    "beat_s": self.heartbeat_seconds,
                    "host_id": _process.host_identity(),
                    "process": process_id(),
                }
            ],
            schema=LOCK_SCHEMA,
        )

    def acquire(self) -> None:
        """Take the lease (or join this run's live one) or raise :class:`LockedError` naming the holder."""
        if self._depth:
            self._depth += 1
            return
        with self._commits:
            for attempt in range(1, _ATTEMPTS + 1):
                table, lease = self._state()
                if self.member and (lease is None or lease.owner != self.owner or lease.token is None):
                    raise LockLostError(self.owner, lease, self.ttl.total_seconds())
                free, age = self._free_for_me(lease)
                if not free:
                    assert lease is not None
                    raise LockedError(lease, age)
                join = lease is not None and lease.owner == self.owner and lease.token is not None
                token = lease.token if join and lease is not None else next_version(table)
                try:
                    version = cas_append(self.store, LOCK, table, self._event("acquire", token=token))
                except CommitConflict:  # someone committed first: read again and decide again
                    _backoff(attempt)
                    continue
                self._token, self._lost, self._depth = token, None, 1
                self._keep(table, version)
                break
            else:
                raise MetaxyError(
                    f"could not take the migration lock at {self.uri} after {_ATTEMPTS} attempts (heavy "
                    "contention); try again"
                )
        self._fence_scope = contextlib.ExitStack()
        self._fence_scope.enter_context(fenced(self.fence))
        if self._heartbeat:
            self._start_heartbeat()

    @property
    def fence(self) -> Fence:
        """What every store commit made under this lease carries and checks (see the module docs)."""
        assert self._token is not None, "the lease is not held"
        return Fence(root=self.store.root_uri, app_id=self.app_id, token=self._token, check=self._check_fence)

    def _check_fence(self, table_token: int | None) -> None:
        """Raise :class:`LockLostError` unless this lease is still the store's (called before each commit)."""
        if self._lost is not None:
            raise self._lost
        assert self._token is not None
        if table_token is not None and table_token > self._token:
            self._lose(self.lease())
        seen = self._seen
        if seen is not None and not committed_after(self.store, LOCK, seen):
            return  # nothing committed to the lock table since it showed this lease: nobody took it over
        table, lease = self._state()
        if not self._ours(lease):
            self._lose(lease)
        if table is not None:
            self._seen = max(table.version(), self._seen or 0)

    def _keep(self, table: DeltaTable | None, version: int) -> None:
        """Remember the lock table right after this process committed ``version`` of it under its lease
        (``table``, updated in place by the commit; call under ``self._commits``)."""
        self._table = table if table is not None and table.version() == version else None
        self._seen = version

    def _own_state(self) -> tuple[DeltaTable | None, LeaseInfo | None, bool]:
        """(table, lease, whether it is ours) for a commit of the holder (call under ``self._commits``).

        When nothing was committed to the lock table since this process's own last commit (one HEAD of the
        next log file), the lease is ours (``lease`` is then None): a takeover or a release by hand is a later
        commit. That commit's table is reused, or opened without reading its rows when the commit created
        the table (delta-rs gives no table object then: the first renew of a fresh store). Otherwise the
        table is read again.
        """
        table, seen = self._table, self._seen
        self._table = None  # used at most once: the caller commits to it, or reads again
        if seen is not None and not committed_after(self.store, LOCK, seen):
            if table is None or table.version() != seen:
                table = open_system_table(self.store, LOCK, for_commit=True)
            if table is not None and table.version() == seen:  # else a commit landed since the HEAD
                return table, None, True
        table, lease = self._state()
        return table, lease, self._ours(lease)

    def _lose(self, lease: LeaseInfo | None) -> None:
        """Record and raise the loss of this lease, naming who took it over (if anyone did)."""
        taker = lease if lease is not None and lease.owner != self.owner else self._taker()
        self._lost = LockLostError(self.owner, taker, self.ttl.total_seconds())
        raise self._lost

    def _taker(self) -> LeaseInfo | None:
        """The first lease another run acquired after this one (None: this one was released by hand)."""
        df = read_system(self.store, LOCK, where=pl.col("project") == self.store.project)
        if df is None or self._token is None:
            return None
        events = in_commit_order(df, "at").to_dicts()
        later = [
            e
            for e in events
            if e["event"] == "acquire" and e["owner"] != self.owner and (e.get("token") or -1) > self._token
        ]
        return fold_lease(later[:1])

    def _beat(self) -> None:
        """Renew the lease by compare-and-swap, after checking it is still ours."""
        with self._commits:
            for attempt in range(1, _ATTEMPTS + 1):
                if self._lost is not None:
                    raise self._lost
                table, lease, ours = self._own_state()
                if not ours:
                    self._lose(lease)
                try:
                    version = cas_append(self.store, LOCK, table, self._event("renew", token=self._token))
                except CommitConflict:
                    _backoff(attempt)
                    continue
                self._keep(table, version)
                return
            raise MetaxyError(f"could not renew the migration lock at {self.uri} (heavy contention)")

    def check(self) -> None:
        """Raise :class:`LockLostError` unless the lease held is still this run's, without renewing it.

        One HEAD of the lock table's next log file while nobody committed to it since this process last
        saw its lease (a takeover or ``unlock --force`` is a later commit); the same check every fenced
        commit makes. For a step about to record its result: the heartbeat keeps a live lease fresh, so
        a renewal commit per step (an open, a write, a listing: ~60 ms on S3) would only repeat it.
        """
        if self._depth:
            self._check_fence(None)

    def renew(self) -> None:
        """Extend the lease now, after checking it is still ours.

        Raises:
            LockLostError: the lease was taken over (or ``unlock --force`` released it); this run must stop
                rather than work next to the new holder.
        """
        if self._depth:
            self._beat()

    def _start_heartbeat(self) -> None:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.heartbeat_seconds):
                try:
                    self._beat()
                except LockLostError:
                    return  # recorded: the next commit of the holder is refused
                except MetaxyError as exc:  # a storage hiccup: try again at the next beat
                    logger.warning("could not renew the migration lock (%s); retrying", exc)

        self._stop = stop
        self._thread = threading.Thread(target=loop, name="metaxy-lock-heartbeat", daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._stop = self._thread = None

    def leave(self) -> None:
        """Stop holding the lease in this process without releasing it (heartbeat and fence end here).

        The run's other processes, or its next step, carry on under the same token; a worker (``member``)
        always leaves this way. The run's coordinator releases the lease at the end with :meth:`release`.
        """
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth:
            return
        self._stop_heartbeat()
        if self._fence_scope is not None:
            self._fence_scope.close()
            self._fence_scope = None

    def release(self) -> None:
        """Give the lease back (the outermost release of a re-entrant holder does; a member only leaves)."""
        if self._depth == 0:
            return
        if self.member or self._depth > 1:
            self.leave()
            return
        self.leave()
        with self._commits:
            for attempt in range(1, _ATTEMPTS + 1):
                table, _, ours = self._own_state()
                if not ours:
                    return  # taken over or released by hand: nothing of ours to release
                try:
                    cas_append(self.store, LOCK, table, self._event("release", token=self._token))
                except CommitConflict:
                    _backoff(attempt)
                    continue
                self._seen = None
                return
            raise MetaxyError(f"could not release the migration lock at {self.uri} (heavy contention)")

    def force_release(self, *, force: bool = False) -> LeaseInfo | None:
        """Release whoever holds the lease (``metaxy migrations unlock``); returns the released lease.

        A lease whose heartbeat is fresh (younger than two heartbeat intervals, on the storage's clock) is
        refused unless ``force``: its holder is probably alive, and is then stopped at its next write.

        Raises:
            LeaseAliveError: the heartbeat is fresh and ``force`` is false.
        """
        with self._commits:
            for attempt in range(1, _ATTEMPTS + 1):
                table, lease = self._state()
                if lease is None:
                    return None
                if not force and not _process.dead_local_process(lease.host_id, lease.pid):
                    age = self.age(lease)
                    beat = lease.heartbeat_seconds
                    if age.seconds is not None and beat and age.seconds <= _FRESH_BEATS * beat:
                        raise LeaseAliveError(lease, age)
                row = self._event("release", owner=lease.owner, token=lease.token)
                try:
                    cas_append(self.store, LOCK, table, row)
                    return lease
                except CommitConflict:
                    _backoff(attempt)
            raise MetaxyError(f"could not release the migration lock at {self.uri} (heavy contention)")

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.release()
            return
        try:
            self.release()
        except MetaxyError as release_error:  # never hide the error that ended the run behind this one
            logger.warning(
                "could not release the migration lock (%s); it expires after lock_ttl_seconds without "
                "heartbeats, a re-run on this host takes it over at once, or run `metaxy migrations unlock`",
                release_error,
            )


#: compare-and-swap attempts before giving up (each losing attempt wrote nothing)
_ATTEMPTS = 40


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0.0, min(0.5, 0.01 * 2**attempt)))
