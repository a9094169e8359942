"""Operations that split into units of work, fanned out over Dagster's executors.

A migration operation whose steps split into units (``DataVersionReconciliation``: buckets of samples, see
:mod:`metaxy_core.migrations.units`) becomes a small graph instead of one op, under the same name::

    plan_0 ─▶ units_0[wide__left__b0_of_8] ... ─collect─▶ plan_1 ─▶ units_1[...] ... ─collect─▶ finish

``plan_<s>`` takes the run's store lease (joining it on a re-execution: its owner is the root run id),
records the steps the previous layer finished and yields the units of layer ``s`` as dynamic outputs; the
``units_<s>`` steps run one unit each, in whatever processes, containers or pods the executor gives them,
joining the run's lease (same fencing token) and renewing it; ``finish`` records the last layer, runs any
layer beyond the graph's stages in its own process, records the operation (and the migration, for its last
operation), reports the feature assets' events and releases the lease. Re-executing a failed run from
failure re-runs only the failed units and what follows them: Dagster keeps the outputs of finished steps.

Nothing but the units' JSON and their results (through the IO manager) passes between steps; with
executors that run steps on other hosts (Kubernetes, Docker, Celery) the IO manager must be shared storage
(``s3_pickle_io_manager``...), as for any Dagster job passing outputs.

A dry run (or an already applied migration) yields no units: ``finish`` plans or skips the operation as
the single op does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dagster import (
    AssetKey,
    DynamicOut,
    DynamicOutput,
    GraphDefinition,
    GraphIn,
    GraphOut,
    In,
    Nothing,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    graph,
)

from metaxy_core.errors import MetaxyError
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.migrations import units as units_
from metaxy_core.migrations.ops import resolve_operation_class
from metaxy_core.migrations.results import StepStatus
from metaxy_core.migrations.state import MigrationState
from metaxy_core.migrations.units import Unit, UnitResult
from metaxy_dagster import events
from metaxy_dagster._runtime import ChainRefs, MetaxyRun, MigrationRef, open_run, run_lease
from metaxy_dagster.errors import MetaxyMigrationChangedError
from metaxy_dagster.ops import after_input_names, op_name, run_operation_op
from metaxy_dagster.resources import MetaxyRunResource, MetaxyStoreResource

#: most layers fanned out per operation (deeper layers run in the ``finish`` step's process)
MAX_STAGES = 4


def splits_into_units(op_type: str) -> bool:
    """Whether the operation class at ``op_type`` splits its steps into units (False if it cannot be
    resolved here: it then runs as one op, which reports the problem when it runs)."""
    try:
        return units_.splits(resolve_operation_class(op_type))
    except MetaxyError:
        return False


def unit_stages(graph: FeatureGraph) -> int:
    """How many layers to fan out: the layers of the graph's downstream features (at most
    :data:`MAX_STAGES`, at least 1)."""
    downstream = [key for key in graph.topological_order() if graph.spec(key).deps]
    depth = units_.layers(graph, downstream)
    return max(1, min(MAX_STAGES, 1 + max(depth.values(), default=0)))


def build_fanout_graph(
    ref: MigrationRef,
    index: int,
    op_id: str,
    op_type: str,
    count: int,
    *,
    stages: int,
    asset_key: AssetKey,
    chain: ChainRefs,
    pool: str | None,
    store_resource_key: str,
    run_resource_key: str,
    op_tags: Mapping[str, str] | None,
    name_prefix: str,
) -> GraphDefinition:
    """The graph standing for one splitting operation: the same name, inputs (``after``...) and output
    (``result``) as the op it replaces (see the module docstring)."""
    name = name_prefix + op_name(ref.migration_id, index, op_id)
    keys = {store_resource_key, run_resource_key}
    tags = {
        **(op_tags or {}),
        "metaxy/migration": ref.migration_id,
        "metaxy/operation": op_id,
        "metaxy/operation_index": str(index + 1),
    }
    after = after_input_names(max(len(ref.parents), 1) if index == 0 else 1)
    where = f"Migration {ref.migration_id}, operation {index + 1}/{count}: `{op_id}` ({op_type})"

    def plan_op(stage: int) -> OpDefinition:
        def body(context, inputs):  # noqa: ANN001 - Dagster inspects these annotations: leave them blank
            yield from _plan(
                context, ref, index, stage, inputs.get("previous"), store_resource_key, run_resource_key
            )

        ins = (
            {a: In(Nothing) for a in after}
            if stage == 0
            else {"previous": In(list, description="results of the previous layer's units")}
        )
        return OpDefinition(
            name=f"{name}__plan_{stage}",
            description=f"{where}: record layer {stage - 1}, yield the units of layer {stage}."
            if stage
            else f"{where}: take the run's lease and yield the units of layer 0.",
            compute_fn=body,
            ins=ins,
            # required, even when it yields no unit: the collect downstream then gets [] (not skipped)
            outs={"units": DynamicOut(str)},
            required_resource_keys=keys,
            tags=tags,
            pool=pool,
        )

    def unit_op(stage: int) -> OpDefinition:
        def body(context, inputs):  # noqa: ANN001
            yield _run_unit(context, ref, inputs["unit"], store_resource_key, run_resource_key)

        return OpDefinition(
            name=f"{name}__units_{stage}",
            description=f"{where}: one unit of work (a bucket of one feature's samples) of layer {stage}.",
            compute_fn=body,
            ins={"unit": In(str)},
            outs={"result": Out(str)},
            required_resource_keys=keys,
            tags=tags,
        )

    def finish_body(context, inputs):  # noqa: ANN001
        yield from _finish(
            context,
            ref,
            index,
            op_id,
            count,
            inputs["previous"],
            asset_key=asset_key,
            chain=chain,
            store_resource_key=store_resource_key,
            run_resource_key=run_resource_key,
        )

    finish = OpDefinition(
        name=f"{name}__finish",
        description=f"{where}: record the last layer, finish the operation, release the lease.",
        compute_fn=finish_body,
        ins={"previous": In(list)},
        outs={"result": Out(Nothing, is_required=index < count - 1)},
        required_resource_keys=keys,
        tags=tags,
        pool=pool,
    )
    plans = [plan_op(s) for s in range(stages)]
    unit_ops = [unit_op(s) for s in range(stages)]

    @graph(
        name=name,
        description=f"{where}, fanned out over units of work.",
        ins={a: GraphIn() for a in after},
        out={"result": GraphOut()},
    )
    def fanout(**upstream: Any) -> Any:
        collected = plans[0].alias("plan_0")(**upstream).map(unit_ops[0].alias("units_0")).collect()
        for s in range(1, stages):
            units = plans[s].alias(f"plan_{s}")(previous=collected)
            collected = units.map(unit_ops[s].alias(f"units_{s}")).collect()
        return finish.alias("finish")(previous=collected)

    return fanout


# ---------------------------------------------------------------------------------------------- bodies
def _open(
    context: OpExecutionContext, store_resource_key: str, run_resource_key: str
) -> tuple[MetaxyRun, MetaxyRunResource]:
    store_resource: MetaxyStoreResource = getattr(context.resources, store_resource_key)
    run: MetaxyRunResource = getattr(context.resources, run_resource_key)
    return open_run(store_resource), run


def _executor(context: OpExecutionContext, setup: MetaxyRun, run: Any, *, member: bool) -> Any:
    secrets = setup.secrets
    mid = context.op.tags.get("metaxy/migration", "")
    bucket_rows = getattr(run, "bucket_rows", None) or setup.config.bucket_rows
    executor = setup.executor(
        run_id=context.run_id,
        force=getattr(run, "force", False),
        batch_rows=bucket_rows,
        on_step=lambda step: context.log.info(events.describe_step(mid, step, secrets)),
        log=context.log,
    )
    executor.lock = run_lease(context.run_id, context.run.root_run_id, setup.store, member=member)
    return executor


def _results(previous: list[str] | None) -> list[UnitResult]:
    return [UnitResult.model_validate_json(r) for r in previous or []]


def _record(executor: Any, migration: Any, results: list[UnitResult]) -> None:
    """Record every step of ``results`` (succeeded ones first: a failed unit raises after them)."""
    groups = units_.by_step(results)
    for group in sorted(groups, key=lambda g: any(r.status == StepStatus.FAILED for r in g)):
        units_.finish_step(executor, migration, group)


def _pending(context: OpExecutionContext, state: MigrationState, run: Any) -> bool:
    return not state.completed and not getattr(run, "dry_run", True) and context.has_assets_def


def _plan(
    context: OpExecutionContext,
    ref: MigrationRef,
    index: int,
    stage: int,
    previous: list[str] | None,
    store_resource_key: str,
    run_resource_key: str,
) -> Iterator[DynamicOutput[str]]:
    setup, run = _open(context, store_resource_key, run_resource_key)
    with setup.errors():
        executor = _executor(context, setup, run, member=stage > 0)
        migration = ref.load()
        state = executor.state(ref.migration_id)
        if not _pending(context, state, run):
            return  # a dry run, the plan job or an applied migration: `finish` does what the op does
        if stage == 0 and index == 0:
            executor.check_parent(migration)
        executor.lock.acquire()
        try:
            if stage == 0:
                state = executor.begin(migration, state)
            else:
                _record(executor, migration, _results(previous))
                state = executor.state(ref.migration_id)
            layers = units_.plan_units(executor, migration, index, state)
        finally:
            executor.lock.leave()  # the lease stays the run's: its units join it
    todo = [unit for layer in layers for unit in layer if unit.layer == stage]
    context.log.info(
        f"{ref.migration_id}: layer {stage}: {len(todo)} unit(s) "
        f"({', '.join(sorted({u.feature for u in todo})) or 'none'})"
    )
    for unit in todo:
        yield DynamicOutput(unit.model_dump_json(), mapping_key=unit.key, output_name="units")


def _run_unit(
    context: OpExecutionContext,
    ref: MigrationRef,
    unit_json: str,
    store_resource_key: str,
    run_resource_key: str,
) -> Output[str]:
    setup, run = _open(context, store_resource_key, run_resource_key)
    unit = Unit.model_validate_json(unit_json)
    with setup.errors():
        executor = _executor(context, setup, run, member=True)
        migration = ref.load()
        with executor.lock:
            result = units_.run_unit(executor, migration, unit)
            if result.status == StepStatus.FAILED:  # recorded, and the step fails: re-execution retries it
                context.log.error(f"unit {unit.label} failed in pid {result.pid} on {result.host}")
                units_.finish_step(executor, migration, [result])
    context.log.info(
        f"unit {unit.label}: {result.status}, {result.rows} row(s) in {result.commits} commit(s), "
        f"{result.duration_s:.2f} s (CPU {result.cpu_s:.2f} s), pid {result.pid} on {result.host}"
        + (f": {result.error}" if result.error else "")
    )
    return Output(
        result.model_dump_json(),
        metadata={
            "metaxy/unit": unit.label,
            "metaxy/rows": result.rows,
            "metaxy/pid": result.pid,
            "metaxy/host": result.host,
            "metaxy/cpu_s": round(result.cpu_s, 3),
            "metaxy/peak_rss_mib": round(result.peak_rss_mib, 1),
            "metaxy/duration_s": round(result.duration_s, 3),
        },
    )


def _finish(
    context: OpExecutionContext,
    ref: MigrationRef,
    index: int,
    op_id: str,
    count: int,
    previous: list[str],
    *,
    asset_key: AssetKey,
    chain: ChainRefs,
    store_resource_key: str,
    run_resource_key: str,
) -> Iterator[Any]:
    setup, run = _open(context, store_resource_key, run_resource_key)
    with setup.errors():
        executor = _executor(context, setup, run, member=False)
        migration = ref.load()
        if ref.op_labels and tuple(migration.operation_labels(store=setup.store)) != ref.op_labels:
            raise MetaxyMigrationChangedError(
                f"the operations of migration {ref.migration_id} changed since the code location was "
                "loaded; reload the code location, then launch the run again"
            )
        if _pending(context, executor.state(ref.migration_id), run):
            with executor.lock:  # joins the run's lease; `run_operation_op` below releases it
                _record(executor, migration, _results(previous))
                # Layers beyond the graph's stages (a deeper graph than at load time) run here, in order.
                executor.run_units = units_.run_in_process(executor)
                executor.run_operation(migration, index, finish=False)
    yield from run_operation_op(
        context,
        ref,
        index,
        op_id,
        count,
        asset_key=asset_key,
        chain=chain,
        store_resource_key=store_resource_key,
        run_resource_key=run_resource_key,
    )


__all__ = ["MAX_STAGES", "build_fanout_graph", "splits_into_units", "unit_stages"]
