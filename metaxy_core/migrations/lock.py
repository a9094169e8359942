"""One apply at a time per store: a lease recorded in a Delta system table, taken by compare-and-swap.

Acquiring reads the lock table at version N and appends an ``acquire`` event as exactly version N+1
(``max_commit_retries=0``): if another process committed first, delta-rs refuses the commit and we re-read.
Delta's commit protocol (atomic rename locally, conditional PUT on S3) makes this safe on both backends.

A lease expires after ``ttl`` seconds unless renewed (the executor renews it after every step, and stops with
:class:`LockLostError` if another run took an expired lease over meanwhile); a holder on
this host whose process is gone is recognised at once, so re-running after ``kill -9`` just works; and
``metaxy migrations unlock`` releases a lease by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from metaxy_core._process import current_pid, dead_local_process, hostname
from metaxy_core.errors import MetaxyError
from metaxy_core.store.system import (
    LOCK,
    LOCK_SCHEMA,
    append_system,
    open_system_table,
    read_system,
    system_errors,
)

if TYPE_CHECKING:
    from metaxy_core.store.delta import DeltaMetadataStore


class LockedError(MetaxyError):
    """Another run holds the store's migration lock."""

    def __init__(self, holder: LeaseInfo) -> None:
        self.holder = holder
        super().__init__(
            f"the store is locked by run {holder.owner} ({holder.host}, pid {holder.pid}) since "
            f"{holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC (lease expires {holder.expires_at:%H:%M:%S} UTC); "
            "wait for it to finish, or if it is dead run `metaxy migrations unlock`"
        )


class LockLostError(MetaxyError):
    """This run's lease expired (or was released by hand) and it no longer holds the store's lock."""

    def __init__(self, owner: str, holder: LeaseInfo | None, ttl_seconds: float) -> None:
        self.owner, self.holder = owner, holder
        why = (
            f"its lease ({ttl_seconds:g} s) expired during a step and run {holder.owner} ({holder.host}, pid "
            f"{holder.pid}) took over at {holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC"
            if holder is not None
            else "the lock was released (`metaxy migrations unlock`) while it worked"
        )
        super().__init__(
            f"run {owner} lost the migration lock: {why}; this run stopped after its current step, whose "
            "completion it did not record. Check `metaxy migrations status`; if steps outlast the lease, "
            "raise lock_ttl_seconds (METAXY_LOCK_TTL_SECONDS)"
        )


@dataclass(frozen=True)
class LeaseInfo:
    owner: str
    host: str
    pid: int
    acquired_at: datetime
    expires_at: datetime


class StoreLock:
    """Lease on a store's migrations for ``owner`` (a run id). Re-entrant for the same owner."""

    def __init__(self, store: DeltaMetadataStore, owner: str, *, ttl_seconds: float | None = None) -> None:
        self.store = store
        self.owner = owner
        self.ttl = timedelta(seconds=ttl_seconds if ttl_seconds is not None else store.lock_ttl_seconds)
        self.uri = store.system_table_uri(LOCK)
        self._depth = 0
        self._acquired_at: datetime | None = None

    # ---------------------------------------------------------------- reading
    def _state(self) -> tuple[DeltaTable | None, LeaseInfo | None]:
        table = open_system_table(self.store, LOCK)
        if table is None:
            return None, None
        df = read_system(self.store, LOCK, table=table, where=pl.col("project") == self.store.project)
        assert df is not None  # a table was given: its rows were read
        return table, self._holder(df)

    @staticmethod
    def _holder(df: pl.DataFrame) -> LeaseInfo | None:
        if df.height == 0:
            return None
        events = df.sort("at")
        last_acquire = events.filter(pl.col("event") == "acquire")
        if last_acquire.height == 0:
            return None
        acquire = last_acquire.row(-1, named=True)
        after = events.filter((pl.col("at") >= acquire["at"]) & (pl.col("owner") == acquire["owner"]))
        if after.filter(pl.col("event") == "release").height:
            return None
        expires = after["expires_at"].max()
        return LeaseInfo(acquire["owner"], acquire["host"], acquire["pid"], acquire["at"], expires)  # type: ignore[arg-type]

    def holder(self) -> LeaseInfo | None:
        """The live lease, if any (expired leases and dead local holders count as free)."""
        _, lease = self._state()
        return lease if lease is not None and not self._is_stale(lease) else None

    def _is_stale(self, lease: LeaseInfo) -> bool:
        if lease.expires_at <= datetime.now(UTC):
            return True
        return lease.owner != self.owner and dead_local_process(lease.host, lease.pid)

    # ---------------------------------------------------------------- writing
    def _event(self, event: str, owner: str | None = None) -> pl.DataFrame:
        now = datetime.now(UTC)
        return pl.DataFrame(
            [
                {
                    "project": self.store.project,
                    "event": event,
                    "owner": owner or self.owner,
                    "host": hostname(),
                    "pid": current_pid(),
                    "at": now,
                    "expires_at": now + self.ttl,
                }
            ],
            schema=LOCK_SCHEMA,
        )

    def acquire(self) -> None:
        """Take the lease or raise :class:`LockedError` naming the holder."""
        if self._depth:
            self._depth += 1
            return
        for _ in range(20):
            table, lease = self._state()
            if lease is not None and lease.owner != self.owner and not self._is_stale(lease):
                raise LockedError(lease)
            row = self._event("acquire")
            try:
                with system_errors(self.store, LOCK, "lock"):
                    if table is None:
                        # Create the table with a neutral event first; racing creators are harmless.
                        append_system(self.store, LOCK, self._event("init"))
                        continue
                    write_deltalake(
                        table, row, mode="append", commit_properties=CommitProperties(max_commit_retries=0)
                    )
            except CommitFailedError:
                continue  # someone committed first: re-read and decide again
            except MetaxyError as exc:
                if "commit" in str(exc).lower() or "already exists" in str(exc).lower():
                    continue
                raise
            self._depth = 1
            self._acquired_at = row["at"][0]
            return
        raise MetaxyError(
            f"could not take the migration lock at {self.uri} after 20 attempts (heavy contention)"
        )

    def renew(self) -> None:
        """Extend the lease, after checking it is still ours.

        Raises:
            LockLostError: the lease expired and another run took the lock over (or ``unlock`` released it);
                this run must stop rather than work next to the new holder.
        """
        if self._depth:
            _, lease = self._state()
            if lease is None or lease.owner != self.owner:
                self._depth = 0  # nothing left to release
                raise LockLostError(self.owner, self._taker(), self.ttl.total_seconds())
            append_system(self.store, LOCK, self._event("renew"))

    def _taker(self) -> LeaseInfo | None:
        """The newest lease another run took since this run acquired (who took over its expired lease)."""
        df = read_system(
            self.store,
            LOCK,
            where=(pl.col("project") == self.store.project)
            & (pl.col("event") == "acquire")
            & (pl.col("owner") != self.owner),
        )
        if df is None:
            return None
        if self._acquired_at is not None:
            df = df.filter(pl.col("at") >= self._acquired_at)
        if df.height == 0:
            return None
        row = df.sort("at").row(-1, named=True)
        return LeaseInfo(row["owner"], row["host"], row["pid"], row["at"], row["expires_at"])

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0:
            append_system(self.store, LOCK, self._event("release"))

    def force_release(self) -> LeaseInfo | None:
        """Release whoever holds the lease (``metaxy migrations unlock``); returns the released lease."""
        _, lease = self._state()
        if lease is None:
            return None
        append_system(self.store, LOCK, self._event("release", owner=lease.owner))
        return lease

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
            logging.getLogger("metaxy.migrations").warning(
                "could not release the migration lock (%s); it expires after lock_ttl_seconds, a re-run on "
                "this host takes it over at once, or run `metaxy migrations unlock`",
                release_error,
            )
