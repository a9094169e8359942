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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from metaxy_core import _process
from metaxy_core._process import current_pid, hostname, now, process_id
from metaxy_core.errors import ConfigError, MetaxyError
from metaxy_core.store.order import committed_version, in_commit_order
from metaxy_core.store.provenance import COMMIT_ORDER
from metaxy_core.store.scope import Fence, fenced
from metaxy_core.store.system import (
    LOCK,
    LOCK_SCHEMA,
    CommitConflict,
    cas_append,
    commit_time,
    next_version,
    open_system_table,
    read_system,
    storage_now,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from metaxy_core.store.delta import DeltaMetadataStore

logger = logging.getLogger("metaxy.migrations")

#: the shortest lease accepted: below it a slow storage request (S3 answers in whole seconds) could let a
#: live holder's lease expire between two heartbeats
MIN_LOCK_TTL_SECONDS = 5.0
#: a lease lasts at least this many heartbeat intervals, so one late heartbeat never loses it
MIN_BEATS_PER_TTL = 3
#: a heartbeat younger than this many intervals means the holder is alive: ``unlock`` refuses without force
_FRESH_BEATS = 2


def lock_settings_problem(
    ttl_seconds: float, heartbeat_seconds: float | None = None
) -> tuple[str, str] | None:
    """(setting, what is wrong and the fix) when the lease periods are unsafe; None when they are fine.

    The lease must be at least :data:`MIN_LOCK_TTL_SECONDS` long and last at least
    :data:`MIN_BEATS_PER_TTL` heartbeats, so one slow storage request never lets a live holder's lease expire.
    """
    if not ttl_seconds >= MIN_LOCK_TTL_SECONDS:
        return "lock_ttl_seconds", (
            f"{ttl_seconds:g} s is too short: a live holder renews its lease every few seconds at best "
            "and one slow storage request must not let it expire; set it to "
            f"{MIN_LOCK_TTL_SECONDS:g} or more (METAXY_LOCK_TTL_SECONDS; default 3600)"
        )
    if heartbeat_seconds is not None and not 0 < heartbeat_seconds <= ttl_seconds / MIN_BEATS_PER_TTL:
        return "lock_heartbeat_seconds", (
            f"{heartbeat_seconds:g} s does not fit lock_ttl_seconds = {ttl_seconds:g}: the lease must last "
            f"at least {MIN_BEATS_PER_TTL} heartbeats; set it above 0 and at most "
            f"{ttl_seconds / MIN_BEATS_PER_TTL:.4g} (METAXY_LOCK_HEARTBEAT_SECONDS), or leave it unset "
            "(a quarter of the TTL)"
        )
    return None


def check_lock_settings(ttl_seconds: float, heartbeat_seconds: float | None = None) -> None:
    """Refuse unsafe lease periods (see :func:`lock_settings_problem`).

    Raises:
        ConfigError: naming the setting, what is wrong and the fix.
    """
    problem = lock_settings_problem(ttl_seconds, heartbeat_seconds)
    if problem is not None:
        raise ConfigError(f"{problem[0]}: {problem[1]}")


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as the lock table records it.

    ``acquired_at``/``expires_at``/``beat_at`` are the holder's clock, for people to read; decisions use
    ``beat_version`` (the lock table version of its last heartbeat) on the storage's clock.
    """

    owner: str
    host: str
    pid: int
    acquired_at: datetime
    expires_at: datetime
    #: fencing token: the lock table version of the acquisition (None: a lease of an earlier version)
    token: int | None = None
    host_id: str | None = None
    process: str | None = None
    ttl_seconds: float | None = None
    heartbeat_seconds: float | None = None
    #: lock table version of the last acquire/renew (its commit time is the heartbeat's time)
    beat_version: int | None = None
    beat_at: datetime | None = None

    def describe(self) -> str:
        return f"run {self.owner} ({self.host}, pid {self.pid})"


@dataclass(frozen=True)
class LeaseAge:
    """How old a lease's last heartbeat is, on the storage's clock (None: a lease of an earlier version)."""

    seconds: float | None
    expires: datetime | None

    @property
    def known(self) -> bool:
        return self.seconds is not None


class LockedError(MetaxyError):
    """Another run holds the store's migration lock."""

    def __init__(self, holder: LeaseInfo, age: LeaseAge | None = None) -> None:
        self.holder, self.age = holder, age
        expires = age.expires if age is not None and age.expires is not None else holder.expires_at
        beat = (
            f", last heartbeat {age.seconds:.0f} s ago" if age is not None and age.seconds is not None else ""
        )
        super().__init__(
            f"the store is locked by {holder.describe()} since {holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC "
            f"(lease expires {expires:%H:%M:%S} UTC unless renewed{beat}); wait for it to finish, or if it "
            "is dead run `metaxy migrations unlock`"
        )


class LeaseAliveError(MetaxyError):
    """``unlock`` refused: the lease's heartbeat is fresh, its holder is probably working."""

    def __init__(self, holder: LeaseInfo, age: LeaseAge) -> None:
        self.holder, self.age = holder, age
        every = holder.heartbeat_seconds or 0.0
        super().__init__(
            f"the migration lock is held by {holder.describe()}, whose last heartbeat was "
            f"{age.seconds or 0:.0f} s ago (it renews every {every:g} s): it looks alive, and releasing it "
            "would let a second apply run next to it. Wait for it to finish or stop that process; "
            "`metaxy migrations unlock --force` releases it anyway (it then stops at its next write)"
        )


class LockLostError(MetaxyError):
    """This run's lease was taken over (or released by hand): it no longer holds the store's lock."""

    def __init__(self, owner: str, holder: LeaseInfo | None, ttl_seconds: float) -> None:
        self.owner, self.holder = owner, holder
        why = (
            f"its lease ({ttl_seconds:g} s) was not renewed in time and {holder.describe()} took over at "
            f"{holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC"
            if holder is not None and holder.owner != owner
            else "the lock was released (`metaxy migrations unlock`) while it worked"
        )
        super().__init__(
            f"run {owner} lost the migration lock: {why}; its next write was refused and it stopped, so it "
            "never works next to the new holder. Check `metaxy migrations status`; if this host was paused "
            "or cut off from the store for longer than the lease, raise lock_ttl_seconds "
            "(METAXY_LOCK_TTL_SECONDS)"
        )


def fold_lease(rows: list[dict[str, Any]]) -> LeaseInfo | None:
    """The lease the lock table's events (in commit order) leave, live or not; None when it is free.

    An ``acquire`` starts a lease (a process of the same run joining a live lease keeps its token), a
    ``renew`` of the holder moves its heartbeat, a ``release`` of the holder ends it; anything else (a
    stale process's event) changes nothing.
    """
    lease: LeaseInfo | None = None
    for row in rows:
        order = row.get(COMMIT_ORDER)
        version = None if order is None else committed_version(order)
        event, owner, token = row["event"], row["owner"], row.get("token")
        same = lease is not None and lease.owner == owner and (token is None or token == lease.token)
        if event == "acquire":
            if same and lease is not None and token is not None:  # joined by another process of the run
                lease = _renewed(lease, row, version)
                continue
            lease = LeaseInfo(
                owner=owner,
                host=row["host"],
                pid=row["pid"],
                acquired_at=row["at"],
                expires_at=row["expires_at"],
                token=token,
                host_id=row.get("host_id"),
                process=row.get("process"),
                ttl_seconds=row.get("ttl_s"),
                heartbeat_seconds=row.get("beat_s"),
                beat_version=version,
                beat_at=row["at"],
            )
        elif event == "renew" and same and lease is not None:
            lease = _renewed(lease, row, version)
        elif event == "release" and same:
            lease = None
    return lease


def _renewed(lease: LeaseInfo, row: dict[str, Any], version: int | None) -> LeaseInfo:
    """``lease`` renewed by the process of ``row``: the last process to beat is the one whose liveness counts
    (processes of one run share its lease)."""
    return replace(
        lease,
        host=row["host"],
        pid=row["pid"],
        host_id=row.get("host_id"),
        process=row.get("process"),
        beat_version=version,
        beat_at=row["at"],
        expires_at=row["expires_at"],
    )


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

    # ---------------------------------------------------------------- reading
    def _state(self) -> tuple[DeltaTable | None, LeaseInfo | None]:
        table = open_system_table(self.store, LOCK)
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
                    cas_append(self.store, LOCK, table, self._event("acquire", token=token))
                except CommitConflict:  # someone committed first: read again and decide again
                    _backoff(attempt)
                    continue
                self._token, self._lost, self._depth = token, None, 1
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
        lease = self.lease()
        if not self._ours(lease):
            self._lose(lease)

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
                table, lease = self._state()
                if not self._ours(lease):
                    self._lose(lease)
                try:
                    cas_append(self.store, LOCK, table, self._event("renew", token=self._token))
                    return
                except CommitConflict:
                    _backoff(attempt)
            raise MetaxyError(f"could not renew the migration lock at {self.uri} (heavy contention)")

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
                table, lease = self._state()
                if not self._ours(lease):
                    return  # taken over or released by hand: nothing of ours to release
                try:
                    cas_append(self.store, LOCK, table, self._event("release", token=self._token))
                    return
                except CommitConflict:
                    _backoff(attempt)
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
