"""What a lease is: the lock table's events folded into a lease, its age, the errors that name its holder, and
the periods a lease may have.

Split from :mod:`metaxy_core.migrations.lock` (which takes, renews, fences and releases leases); the names
are re-exported there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from metaxy_core.errors import ConfigError, MetaxyError
from metaxy_core.store.order import committed_version
from metaxy_core.store.provenance import COMMIT_ORDER

#: the shortest lease accepted: below it a slow storage request (S3 answers in whole seconds) could let a
#: live holder's lease expire between two heartbeats
MIN_LOCK_TTL_SECONDS = 5.0
#: a lease lasts at least this many heartbeat intervals, so one late heartbeat never loses it
MIN_BEATS_PER_TTL = 3


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
            f"{MIN_LOCK_TTL_SECONDS:g} or more (METAXY_LOCK_TTL_SECONDS; default 600)"
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
