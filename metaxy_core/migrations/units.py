"""Units of work: one operation's steps split so that many processes or hosts can run them at once.

A step (migration, operation, feature) of an operation that opts in (``DataVersionReconciliation`` does, see
:meth:`~metaxy_core.migrations.ops.BaseOperation.plan_units`) splits into **units** of the feature's sample
buckets, planned once (:func:`plan_units`) so that every worker agrees on which samples are whose: one
bucket per unit when buckets are id ranges (each reads only its own files), about ``sqrt(k)`` interleaved
buckets per unit when they are id hashes (each unit reads the whole table once and keeps its share, so
fewer, larger units read less in total).
Features of one topological *layer* of the operation's features are independent, so all their units may
run at once; a layer starts when the one before it is done (its rows are the next layer's upstream).

Running every unit of a step, in any order and in any process, gives the latest view the sequential run
gives: every unit writes under the step's one deterministic write id
(:func:`~metaxy_core.migrations.steps.step_write_id`), its buckets hold disjoint samples, and a unit run
again (a retry, a resumed run) skips the samples already carried, so it writes nothing twice. A step is
recorded in the migration log once, when all its units are done (:func:`finish_step`); a re-run resumes at
the first unrecorded step, and its finished buckets cost a read, not a write.

A :class:`Unit` is small, frozen and JSON-serializable: Dagster passes it between step processes as a
dynamic output, the CLI's ``--workers`` sends it to local processes. Every unit commits under its run's
lease: the run's coordinator holds it, workers join it (``StoreLock(member=True)``) and renew it.
"""

from __future__ import annotations

import math
import os
import re
import resource
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from metaxy_core._process import hostname
from metaxy_core.errors import MetaxyError
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import progress
from metaxy_core.migrations.context import running_step, step_label
from metaxy_core.migrations.lock import LockLostError
from metaxy_core.migrations.ops import BaseOperation
from metaxy_core.migrations.results import (
    EventStatus,
    MigrationFailed,
    MigrationResult,
    RunStatus,
    StepResult,
    StepStatus,
    outcome_of,
    step_status,
)
from metaxy_core.migrations.state import MigrationState
from metaxy_core.migrations.steps import step_write_id
from metaxy_core.migrations.usercode import step_error
from metaxy_core.store.buckets import Partitioning

if TYPE_CHECKING:
    from metaxy_core.migrations.executor import MigrationExecutor
    from metaxy_core.migrations.models import Migration

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


class Unit(BaseModel):
    """One unit of work: some buckets of one (migration, operation, feature) step, or the whole step.

    ``buckets`` None means the whole step in one unit (the operation does not split, or has nothing to
    split: a new, unchanged or root feature). Otherwise the unit is buckets ``buckets`` of ``bucket_count``
    buckets of samples (done one after another: memory follows one bucket); ``boundaries`` are the range
    plan's cuts on the first id column (None: hash buckets). ``epoch`` is the migration's apply epoch (a
    re-apply after a rollback writes under new ids).
    """

    model_config = ConfigDict(frozen=True)

    migration_id: str
    op_index: int
    feature: str
    layer: int = 0
    buckets: tuple[int, ...] | None = None
    bucket_count: int = 1
    ids: tuple[str, ...] = ()
    boundaries: list[Any] | None = None
    epoch: int = 0

    @staticmethod
    def cuts_of(plan: Partitioning) -> list[Any] | None:
        """``plan``'s range cuts as JSON values (None: hash buckets), as :meth:`partitioning` reads them back.

        Units travel as JSON to other processes: dates and times go as their physical integers (days, or time
        units since the epoch), because JSON would turn them into strings that polars no longer casts back.
        """
        if plan.boundaries is None:
            return None
        cuts = plan.boundaries
        return (cuts.to_physical() if cuts.dtype.is_temporal() else cuts).to_list()

    @property
    def key(self) -> str:
        """A name unique within the step's units, safe as a Dagster mapping key (letters, digits, ``_``)."""
        if self.buckets is None:
            part = "all"
        else:
            first, n = self.buckets[0], len(self.buckets)
            part = f"b{first}_of_{self.bucket_count}" + (f"_x{n}" if n > 1 else "")
        return f"{_UNSAFE.sub('_', self.feature)}__{part}"

    @property
    def label(self) -> str:
        """How logs name the unit: ``<feature> bucket 3/8``, ``<feature> buckets 1,5,9/12``, or ``<feature>``
        for a whole step."""
        if self.buckets is None:
            return self.feature
        numbers = ",".join(str(b + 1) for b in self.buckets)
        return f"{self.feature} bucket{'s' if len(self.buckets) > 1 else ''} {numbers}/{self.bucket_count}"

    @property
    def write_id(self) -> str:
        """The step's write id: every unit of the step writes under it."""
        return step_write_id(self.migration_id, self.op_index, self.feature, self.epoch)

    def partitioning(self, id_dtype: pl.DataType) -> Partitioning:
        """The step's bucket plan, rebuilt in the worker (``id_dtype``: the first id column's type)."""
        cuts = None if self.boundaries is None else pl.Series("boundaries", self.boundaries).cast(id_dtype)
        return Partitioning(self.bucket_count, self.ids, cuts)


class UnitResult(BaseModel):
    """What a unit did, and where it ran (process id and host: the proof that units spread)."""

    unit: Unit
    status: StepStatus = StepStatus.COMPLETED
    rows: int = 0
    commits: int = 0
    skipped: int = 0
    note: str = ""
    error: str = ""
    writes: dict[str, int] = Field(default_factory=dict)
    pid: int = 0
    host: str = ""
    duration_s: float = 0.0
    cpu_s: float = 0.0
    #: peak resident memory of the process that ran the unit, so far (MiB; what a worker must be given)
    peak_rss_mib: float = 0.0


#: runs independent units of a migration (one layer) and returns their results, in any order
UnitRunner = Callable[["Migration", list[Unit]], list[UnitResult]]


def splits(op: BaseOperation | type[BaseOperation] | None) -> bool:
    """Whether ``op`` (an operation or its class) splits its steps into units (it overrides
    :meth:`BaseOperation.plan_units`)."""
    if op is None:
        return False
    cls = op if isinstance(op, type) else type(op)
    return cls.plan_units is not BaseOperation.plan_units


def layers(graph: FeatureGraph, features: Sequence[FeatureKey]) -> dict[FeatureKey, int]:
    """The topological layer of each of ``features`` among themselves: 0 for those depending on none of the
    others, else one more than their deepest dependency among them."""
    chosen = set(features)
    layer: dict[FeatureKey, int] = {}
    for feature in graph.topological_order(list(features)):
        deps = [d.feature for d in graph.spec(feature).deps if d.feature in chosen]
        layer[feature] = 1 + max((layer[d] for d in deps), default=-1)
    return layer


def unit_shares(plan: Partitioning) -> list[tuple[int, ...]]:
    """The buckets of each unit of a step planned as ``plan``: one bucket per unit for id ranges (a unit
    reads only its files); for id hashes ``ceil(sqrt(k))`` units of interleaved buckets, because every unit
    reads the whole table once to keep its share: ``k`` units would read it ``k`` times."""
    if plan.mode != "hash":
        return [(b,) for b in range(plan.k)]
    units = math.ceil(math.sqrt(plan.k))
    return [tuple(range(u, plan.k, units)) for u in range(units)]


def plan_units(
    executor: MigrationExecutor, migration: Migration, op_index: int, state: MigrationState
) -> list[list[Unit]]:
    """The units of operation ``op_index``'s unfinished steps, grouped by layer (run the groups in order).

    Raises:
        MetaxyError: the operation's features cannot be determined (naming the migration).
    """
    op = executor.built_operations(migration)[op_index]
    with executor.graph.use():
        ctx = executor.context(migration, op_index, dry_run=False)
        features = op.features_for(ctx)
        depth = layers(ctx.to_graph, features)
        grouped: dict[int, list[Unit]] = {}
        for feature in features:
            if state.step_done(op_index, str(feature)):
                continue
            base = Unit(
                migration_id=migration.migration_id,
                op_index=op_index,
                feature=str(feature),
                layer=depth[feature],
                epoch=state.epoch,
            )
            plan = op.plan_units(ctx, feature)
            if plan is None:
                units = [base]
            else:
                cuts = Unit.cuts_of(plan)
                units = [
                    base.model_copy(
                        update={"buckets": share, "bucket_count": plan.k, "ids": plan.ids, "boundaries": cuts}
                    )
                    for share in unit_shares(plan)
                ]
            grouped.setdefault(depth[feature], []).extend(units)
    return [grouped[k] for k in sorted(grouped)]


def run_unit(executor: MigrationExecutor, migration: Migration, unit: Unit) -> UnitResult:
    """Run one unit in this process, under the lease the caller holds (or joined); never raises for the
    unit's own failure: it comes back as a ``failed`` result (its message redacted), so it can cross
    process boundaries and be recorded by whoever finishes the step."""
    start, cpu = time.perf_counter(), time.process_time()
    where = {"pid": os.getpid(), "host": hostname()}
    op = executor.built_operations(migration)[unit.op_index]
    method = f"{type(op).__qualname__}.run()"
    feature = FeatureKey(unit.feature)
    label = step_label(migration.migration_id, op.op_id, unit.label)
    with (
        executor.graph.use(),
        executor.store.write_scope(unit.write_id) as scope,
        running_step(label, executor.on_progress),
    ):
        try:
            ctx = executor.context(migration, unit.op_index, dry_run=False)
            if unit.buckets is None:
                outcome = outcome_of(op.run(ctx, feature), method=method)
                status = step_status(outcome, op.op_id)
                done = {"rows": outcome.rows, "note": outcome.note, "status": status}
            else:
                scan = executor.store.scan_feature(feature)
                assert scan is not None, "a planned feature has a table"
                dtype = scan.collect_schema()[unit.ids[0]]
                got = op.run_unit(ctx, feature, unit.partitioning(dtype), unit.buckets)
                done = {"rows": got.rows, "commits": got.commits, "skipped": got.skipped}
        except LockLostError as exc:  # fenced out: the run must stop; say so as it is
            done = {"status": StepStatus.FAILED, "error": str(exc)}
        except Exception as exc:
            exc = executor.store.storage_error(exc) or exc  # S3 failed in a frame the operation collected
            done = {"status": StepStatus.FAILED, "error": step_error(exc, method, executor.store.secrets)}
    return UnitResult(
        unit=unit,
        writes=dict(scope.rows_by_feature),
        duration_s=time.perf_counter() - start,
        cpu_s=time.process_time() - cpu,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **where,
        **done,
    )


def finish_step(
    executor: MigrationExecutor, migration: Migration, results: Sequence[UnitResult]
) -> StepResult:
    """Record one step whose units are all done (one event in the migration log) and return it.

    Raises:
        MigrationFailed: a unit failed; the failure is recorded (the step stays unfinished, and a re-run
            resumes it: its finished buckets write nothing again).
    """
    first = results[0].unit
    op = executor.built_operations(migration)[first.op_index]
    feature = FeatureKey(first.feature)
    writes: dict[str, int] = {}
    for r in results:
        for name, rows in r.writes.items():
            writes[name] = writes.get(name, 0) + rows
    failed = [r for r in results if r.status == StepStatus.FAILED]
    rows = sum(r.rows for r in results)
    if failed:
        _fail(executor, migration, op, first, failed[0], rows, writes)
    if first.buckets is None:
        status, note = results[0].status, results[0].note
    else:
        status, note = StepStatus.COMPLETED, op.units_note(feature, sum(r.skipped for r in results))
    result = StepResult(
        op_index=first.op_index,
        op_id=op.op_id,
        op_type=op.type or op.import_path(),
        feature_key=first.feature,
        status=status,
        rows=rows,
        duration_s=max((r.duration_s for r in results), default=0.0),
        note=note,
    )  # its duration is the longest unit's: units of a step run side by side
    executor.lock.check()  # first: a run whose lease was taken over must not record its step
    executor.record_step(migration, result, first.write_id, writes)
    executor.notify(result)
    return result


def _fail(
    executor: MigrationExecutor,
    migration: Migration,
    op: BaseOperation,
    unit: Unit,
    failed: UnitResult,
    rows: int,
    writes: dict[str, int],
) -> NoReturn:
    """Record the step as failed (and the migration) and raise :class:`MigrationFailed` naming the unit."""
    message = failed.error or "failed"
    where = f" (pid {failed.pid} on {failed.host})" if failed.pid else ""
    result = StepResult(
        op_index=unit.op_index,
        op_id=op.op_id,
        op_type=op.type or op.import_path(),
        feature_key=unit.feature,
        status=StepStatus.FAILED,
        rows=rows,
        duration_s=failed.duration_s,
        error=f"unit {failed.unit.label}{where}: {message}",
    )
    try:
        executor.record_step(migration, result, unit.write_id, writes)
        progress.record(
            executor.store,
            project=executor.project,
            migration_id=migration.migration_id,
            status=EventStatus.FAILED,
            run_id=executor.run_id,
            checksum=migration.checksum,
            error=result.error,
        )
    except MetaxyError as record_error:  # the unit's own error is the one to report
        executor.log.warning("could not record the failure in the migration log: %s", record_error)
    executor.notify(result)
    path = f"{migration.source_path}: " if migration.source_path else ""
    raise MigrationFailed(
        f"{path}migration {migration.migration_id}, operation {op.op_id} on {unit.feature} failed: "
        f"{result.error}. Completed steps and buckets are kept; fix the cause and re-run `metaxy migrations "
        "apply` to resume here.",
        MigrationResult(
            migration_id=migration.migration_id,
            kind=migration.kind,
            status=RunStatus.FAILED,
            steps=[result],
            error=result.error,
        ),
    )


def by_step(results: Sequence[UnitResult]) -> list[list[UnitResult]]:
    """Unit results grouped by step (feature), in the order their features first appear."""
    grouped: dict[str, list[UnitResult]] = {}
    for r in results:
        grouped.setdefault(r.unit.feature, []).append(r)
    return list(grouped.values())


def already_done(
    executor: MigrationExecutor, migration: Migration, op_index: int, state: MigrationState
) -> list[StepResult]:
    """Steps of the operation completed by an earlier run (reported, not run again)."""
    op = executor.built_operations(migration)[op_index]
    return [
        StepResult(
            op_index=op_index,
            op_id=op.op_id,
            op_type=op.type or op.import_path(),
            feature_key=feature,
            status=StepStatus.ALREADY_DONE,
            rows=step.rows,
            note=step.note,
        )
        for (index, feature), step in state.steps.items()
        if index == op_index and state.step_done(op_index, feature)
    ]


def run_operation_units(
    executor: MigrationExecutor,
    migration: Migration,
    op_index: int,
    state: MigrationState,
    run_units: UnitRunner,
) -> list[StepResult]:
    """Run operation ``op_index``'s unfinished steps as units, layer by layer, through ``run_units`` (local
    processes, or this process); each step is recorded as soon as its units are done.

    Raises:
        MigrationFailed: a unit failed (recorded; the steps finished before it are kept).
    """
    results = already_done(executor, migration, op_index, state)
    for layer in plan_units(executor, migration, op_index, state):
        executor.log.info(
            "%s: %d unit(s) of layer %d (%s)",
            migration.migration_id,
            len(layer),
            layer[0].layer,
            ", ".join(sorted({u.feature for u in layer})),
        )
        done = run_units(migration, layer)
        steps = by_step(done)
        # Record every step that succeeded before raising for a failed one: finished work is kept.
        for group in sorted(steps, key=lambda g: any(r.status == StepStatus.FAILED for r in g)):
            results.append(finish_step(executor, migration, group))
    return results


def run_in_process(executor: MigrationExecutor) -> UnitRunner:
    """A :data:`UnitRunner` that runs units one after another in this process (under its lease)."""
    return lambda migration, units: [run_unit(executor, migration, u) for u in units]


__all__ = [
    "Unit",
    "UnitResult",
    "UnitRunner",
    "finish_step",
    "layers",
    "plan_units",
    "run_operation_units",
    "run_in_process",
    "run_unit",
    "splits",
    "unit_shares",
]
