"""Undoing applied migrations without losing anything.

Rows are never deleted. Every row a migration step writes carries the step's write id
(``<migration>/<op>/<feature>[/r<epoch>]``); rolling back appends those ids to the ``retracted_writes`` system
table, which every read filters out. The previous row of each sample is therefore current again, rows other
writers appended meanwhile stay visible, and the retracted rows remain in the Delta table (and its time
travel) should anyone need them. The migration log gets a ``rolling_back`` event before anything is hidden and
a ``rolled_back`` event once everything is, after which the migration is pending again; a later apply writes
under a new epoch's write ids. A rollback killed in between shows as ``rolling_back`` (``apply`` refuses the
migration); running the rollback again hides what is left and finishes it.

A single migration can only be rolled back when no later migration of the chain is applied (their rows were
computed from its rows); ``rollback(target)`` therefore undoes the newest applied migrations first, down to
and including the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from metaxy_core.errors import MetaxyError
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import progress
from metaxy_core.migrations.chain import MigrationChain
from metaxy_core.migrations.executor import MigrationExecutor
from metaxy_core.migrations.results import EventStatus, MigrationStatus, RollbackStatus
from metaxy_core.migrations.state import MigrationState, applied, state_of
from metaxy_core.store.provenance import WRITE_ID
from metaxy_core.store.system import retract_writes


class RollbackRefused(MetaxyError):
    """A rollback would not be exact; the message lists what must be rolled back first."""


@dataclass
class FeatureRollback:
    feature_key: str
    hidden: int
    restored: int
    write_ids: list[str] = field(default_factory=list)


@dataclass
class RollbackResult:
    migration_id: str
    status: RollbackStatus
    dry_run: bool
    features: list[FeatureRollback] = field(default_factory=list)

    @property
    def rows_hidden(self) -> int:
        return sum(f.hidden for f in self.features)


def rollback(
    executor: MigrationExecutor, chain: MigrationChain, target: str | None = None, *, dry_run: bool = False
) -> list[RollbackResult]:
    """Roll back the newest applied migration, or every applied one from the newest down to ``target``."""
    todo = rollback_targets(chain, executor.states(), target)
    if not todo:
        return []
    results: list[RollbackResult] = []
    planned_hidden: dict[str, set[str]] = {}
    with _maybe_lock(executor, dry_run):
        for migration_id in todo:
            result = rollback_migration(
                executor,
                chain,
                migration_id,
                dry_run=dry_run,
                assume_rolled_back=[r.migration_id for r in results],
                extra_hidden=planned_hidden,
            )
            for f in result.features:
                planned_hidden.setdefault(f.feature_key, set()).update(f.write_ids)
            results.append(result)
    return results


def rollback_targets(
    chain: MigrationChain, states: Mapping[str, MigrationState], target: str | None = None
) -> list[str]:
    """The migrations :func:`rollback` would undo, newest first: the newest applied one, or ``target`` and
    every applied migration that follows it (not a sibling branch's). The CLI asks for confirmation with it.

    Raises:
        UnknownMigrationError: no such migration.
        RollbackRefused: ``target`` is not applied.
    """
    done = [m.migration_id for m in applied(chain, states)]
    if target is None:
        return done[-1:]
    chain.get(target)
    if target not in done:
        raise RollbackRefused(f"migration {target} is not applied; nothing to roll back")
    undo = {target, *(m.migration_id for m in chain.descendants(target))}
    return [m for m in reversed(done) if m in undo]


class _maybe_lock:
    def __init__(self, executor: MigrationExecutor, dry_run: bool) -> None:
        self.lock = None if dry_run else executor.lock

    def __enter__(self) -> None:
        if self.lock:
            self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        if self.lock:
            self.lock.release()


def rollback_migration(
    executor: MigrationExecutor,
    chain: MigrationChain,
    migration_id: str,
    *,
    dry_run: bool = False,
    assume_rolled_back: list[str] | None = None,
    extra_hidden: dict[str, set[str]] | None = None,
) -> RollbackResult:
    """Roll back one migration (refused while a later migration is still applied)."""
    chain.get(migration_id)
    states = executor.states()
    state = state_of(states, migration_id)
    if not state.started:
        return RollbackResult(migration_id, RollbackStatus.NOT_APPLIED, dry_run)
    skip = set(assume_rolled_back or [])
    later = [
        m.migration_id for m in applied(chain.descendants(migration_id), states) if m.migration_id not in skip
    ]
    if later:
        raise RollbackRefused(
            f"cannot roll back {migration_id} alone: later migration(s) {', '.join(reversed(later))} were "
            "applied on top of it; roll them back first (newest first), e.g. `metaxy migrations rollback "
            f"{migration_id}` rolls back everything down to it"
        )
    store = executor.store
    prefix = f"{migration_id}/"
    features = _candidate_features(executor, state)
    planned: list[FeatureRollback] = []
    for key in features:
        if not store.has_metadata(key):
            continue
        already = set(store.hidden_write_ids(key)) | (extra_hidden or {}).get(str(key), set())
        history = store.read_metadata(key, include_history=True, graph=executor.graph)
        ids = list(executor.graph.spec(key).id_columns)
        write_ids = (
            history.filter(pl.col(WRITE_ID).str.starts_with(prefix) & ~pl.col(WRITE_ID).is_in(list(already)))
            .select(pl.col(WRITE_ID).unique())
            .collect()[WRITE_ID]
            .to_list()
        )
        if not write_ids:
            continue
        visible = history.filter(~pl.col(WRITE_ID).is_in(list(already)))
        before = store.latest_per_sample(visible, ids)
        after = store.latest_per_sample(visible.filter(~pl.col(WRITE_ID).is_in(write_ids)), ids)
        hidden, restored = pl.collect_all(
            [
                before.filter(pl.col(WRITE_ID).is_in(write_ids)).select(pl.len()),
                after.join(
                    before.filter(pl.col(WRITE_ID).is_in(write_ids)).select(ids), on=ids, how="semi"
                ).select(pl.len()),
            ]
        )
        planned.append(FeatureRollback(str(key), hidden.item(), restored.item(), sorted(write_ids)))
    if dry_run:
        return RollbackResult(migration_id, RollbackStatus.PLANNED, True, planned)
    if planned and state.status != MigrationStatus.ROLLING_BACK:  # before anything is hidden: a kill shows
        progress.record(
            store,
            project=executor.project,
            migration_id=migration_id,
            status=EventStatus.ROLLING_BACK,
            run_id=executor.run_id,
            note="; ".join(f"{f.feature_key}: {len(f.write_ids)} write(s) to hide" for f in planned),
        )
    for f in planned:
        retract_writes(
            store,
            FeatureKey(f.feature_key),
            f.write_ids,
            retracted=True,
            reason=f"rollback of {migration_id} by run {executor.run_id}",
        )
    progress.record(
        store,
        project=executor.project,
        migration_id=migration_id,
        status=EventStatus.ROLLED_BACK,
        run_id=executor.run_id,
        rows=sum(f.hidden for f in planned),
        note="; ".join(f"{f.feature_key}: {f.hidden} hidden, {f.restored} restored" for f in planned),
        writes={f.feature_key: f.hidden for f in planned},  # rows hidden per feature (what readers lost)
    )
    return RollbackResult(migration_id, RollbackStatus.ROLLED_BACK, False, planned)


def _candidate_features(executor: MigrationExecutor, state: MigrationState) -> list[FeatureKey]:
    """Features of the code's graph: rows are found by write id, so crashes that logged nothing are
    covered."""
    unknown = sorted(k for k in state.written if FeatureKey(k) not in executor.graph)
    if unknown:
        raise RollbackRefused(
            f"migration {state.migration_id} wrote feature(s) {', '.join(unknown)}, which are no longer in "
            "the feature graph; restore their definitions before rolling back"
        )
    return executor.graph.topological_order()
