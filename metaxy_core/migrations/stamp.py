"""Marking migrations applied without running them: ``stamp`` one, or ``baseline`` a store that has none.

A stamp is a ``stamped`` event in the migration log (with the file's checksum, like an apply): the migration
then counts as completed everywhere (status, apply, the parent check, Dagster), ``history`` shows the stamp,
and since it wrote no rows a rollback only records ``rolled_back`` (rows an earlier partial apply wrote are
retracted as usual). Use it when the work was done another way, e.g. by hand, or by a pipeline that
recomputed the features.

``baseline`` adopts a store that already holds data but has no migration log (a store filled by pipelines
before the project used migrations, or restored from elsewhere): it stamps the whole chain up to the head (or
a given migration) in one go, under the migration lock, and refuses a store whose log has events.
"""

from __future__ import annotations

from dataclasses import dataclass

from metaxy_core.errors import MetaxyError
from metaxy_core.migrations import progress
from metaxy_core.migrations.chain import MigrationChain
from metaxy_core.migrations.executor import MigrationExecutor
from metaxy_core.migrations.results import EventStatus, MigrationStatus, StampStatus
from metaxy_core.migrations.state import state_of


class StampRefused(MetaxyError):
    """A stamp or baseline would leave the log inconsistent; the message says what to do instead."""


@dataclass
class StampResult:
    """What stamping one migration did."""

    migration_id: str
    status: StampStatus
    #: where the migration stood before (``in_progress``/``failed``: rows it wrote so far stay)
    previous_status: MigrationStatus

    def as_dict(self) -> dict[str, str]:
        return {
            "migration_id": self.migration_id,
            "status": str(self.status),
            "previous_status": str(self.previous_status),
        }


def stamp(executor: MigrationExecutor, chain: MigrationChain, migration_id: str) -> StampResult:
    """Record ``migration_id`` as applied without running it (a no-op when it already is).

    Raises:
        UnknownMigrationError: no such migration.
        StampRefused: a migration it follows is not applied yet.
    """
    migration = chain.get(migration_id)
    with executor.lock:
        states = executor.states()
        state = state_of(states, migration_id)
        if state.completed:
            return StampResult(migration_id, StampStatus.ALREADY_APPLIED, state.status)
        missing = [p for p in migration.parents if not state_of(states, p).completed]
        if missing:
            raise StampRefused(
                f"cannot stamp {migration_id}: it follows {', '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not applied; stamp or apply "
                f"{'it' if len(missing) == 1 else 'them'} first, or run `metaxy migrations baseline "
                f"{migration_id}` to stamp the chain up to it"
            )
        executor.lock.check()  # a run whose lease was taken over must not record anything
        progress.record_all(executor.store, [_event(executor, migration_id, migration.checksum)])
    return StampResult(migration_id, StampStatus.STAMPED, state.status)


def baseline(
    executor: MigrationExecutor, chain: MigrationChain, target: str | None = None
) -> list[StampResult]:
    """Stamp every migration up to ``target`` (default: the head) on a store without a migration log.

    Raises:
        StampRefused: the chain is empty, or the store's log already has events for this project.
    """
    if not len(chain):
        raise StampRefused("there are no migrations to baseline; write or generate one first")
    if target is not None:
        chain.get(target)
    with executor.lock:
        events = progress.read_events(executor.store, executor.project)
        if events.height:
            known = sorted(set(events["migration_id"].to_list()))
            raise StampRefused(
                f"{executor.store.root_uri} already has a migration log for project {executor.project} "
                f"({events.height} events, migrations {', '.join(known)}); baseline only adopts a store "
                "without one: use `metaxy migrations stamp ID` to mark single migrations applied"
            )
        migrations = chain.upto(target)
        executor.lock.check()  # a run whose lease was taken over must not record anything
        # one commit: a baseline interrupted halfway would leave a log that the next baseline refuses
        progress.record_all(
            executor.store, [_event(executor, m.migration_id, m.checksum) for m in migrations]
        )
    return [StampResult(m.migration_id, StampStatus.STAMPED, MigrationStatus.NOT_STARTED) for m in migrations]


def _event(executor: MigrationExecutor, migration_id: str, checksum: str) -> dict[str, str]:
    return {
        "project": executor.project,
        "migration_id": migration_id,
        "status": EventStatus.STAMPED,
        "run_id": executor.run_id,
        "checksum": checksum,
        "note": "marked applied without running (metaxy migrations stamp/baseline)",
    }
