"""One Dagster op per migration operation.

An op runs ``MigrationExecutor.run_operation(migration, index, dry_run=...)`` with the Dagster run id as the
executor's run id. It rebuilds everything it needs (configuration, feature graph, migration file, store) in
the process that runs it, so ops are process-separable; the engine's progress log in the store is the only
state that passes from one op to the next. A failed op keeps the steps it completed, so re-executing the run
from failure resumes at the failed operation.

In an asset job the last op's output is the migration asset: it is yielded (a materialization) after an apply
and also for an already applied migration (a no-op that must not block its children). Every feature table a
step of this run wrote gets a materialization of its own (rows written, new feature version, migration id);
steps done by earlier runs of this instance record nothing again, and a migration applied outside it (the
CLI) gets its feature tables reported once (see :func:`metaxy_dagster.history.catch_up_features`).

A dry run records no materialization. In the plan job (an op job over the same graphs) outputs are not assets,
so every migration of the chain is planned in order. In an asset job (the apply job with ``dry_run: true``) a
planned migration's output is not yielded, so Dagster skips what follows it in the run; instead the last op
of the first selected migration that runs plans every other selected migration that will not run, in chain
order: the whole selection is planned, as the plan job would. Plans are observations on the migration assets
and on the feature assets they would write.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from dagster import AssetKey, In, Nothing, OpDefinition, OpExecutionContext, Out, Output

from metaxy_core.migrations.results import RunStatus
from metaxy_core.reporting import throttled
from metaxy_dagster import events
from metaxy_dagster._runtime import ChainRefs, MetaxyRun, MigrationRef, open_run, run_lease
from metaxy_dagster.errors import MetaxyMigrationChangedError, MetaxyPlanOnlyError
from metaxy_dagster.history import catch_up_features
from metaxy_dagster.resources import (
    RUN_RESOURCE_KEY,
    STORE_RESOURCE_KEY,
    MetaxyRunResource,
    MetaxyStoreResource,
)

DEFAULT_POOL = "metaxy_migrations"
#: the op of a migration without operations (applying it only records it as done)
EMPTY_OPERATION = ("apply", "record the migration as applied")

_INVALID = re.compile(r"[^A-Za-z0-9_]")


def sanitize_name(text: str) -> str:
    """``text`` with every character Dagster refuses in names (``^[A-Za-z0-9_]+$``) replaced by ``_``."""
    return _INVALID.sub("_", text) or "_"


def op_name(migration_id: str, index: int, op_id: str) -> str:
    """Unique op name: migration id, 1-based position, operation id (``20250101_000000_x__1_reconcile``)."""
    return f"{sanitize_name(migration_id)}__{index + 1}_{sanitize_name(op_id)}"


def after_input_names(count: int) -> list[str]:
    """The first op's Nothing inputs, one per parent migration: ``after``, then ``after_2``... (merge)."""
    return ["after" if i == 0 else f"after_{i + 1}" for i in range(count)]


def build_operation_ops(
    ref: MigrationRef,
    *,
    asset_key: AssetKey,
    chain: ChainRefs | None = None,
    pool: str | None = DEFAULT_POOL,
    store_resource_key: str = STORE_RESOURCE_KEY,
    run_resource_key: str = RUN_RESOURCE_KEY,
    op_tags: Mapping[str, str] | None = None,
    name_prefix: str = "",
) -> list[OpDefinition]:
    """The ops of one migration, in order; each has a Nothing input ``after`` and a Nothing output
    ``result``; the first op of a merge migration has one ``after`` input per parent.

    ``chain`` (every migration of the code location, their asset keys and the feature assets) lets ops record
    events on feature assets and plan a whole selection in a dry run; without it they know their migration
    only.
    """
    chain = chain or ChainRefs(refs={ref.migration_id: ref}, keys={ref.migration_id: asset_key})
    labels = list(ref.op_labels) or [EMPTY_OPERATION]
    return [
        _build_op(
            ref,
            index,
            op_id,
            op_type,
            len(labels),
            asset_key=asset_key,
            chain=chain,
            pool=pool,
            store_resource_key=store_resource_key,
            run_resource_key=run_resource_key,
            op_tags=op_tags,
            name_prefix=name_prefix,
        )
        for index, (op_id, op_type) in enumerate(labels)
    ]


def _build_op(
    ref: MigrationRef,
    index: int,
    op_id: str,
    op_type: str,
    count: int,
    *,
    asset_key: AssetKey,
    chain: ChainRefs,
    pool: str | None,
    store_resource_key: str,
    run_resource_key: str,
    op_tags: Mapping[str, str] | None,
    name_prefix: str,
) -> OpDefinition:
    # OpDefinition directly rather than @op: the decorator's signature inspection costs ~1 ms per op, which
    # matters for a code location with hundreds of migrations (see the 200-migration load test).
    def _operation(context, inputs):  # noqa: ANN001 - Dagster inspects these annotations: leave them blank
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

    return OpDefinition(
        name=name_prefix + op_name(ref.migration_id, index, op_id),
        description=f"Migration {ref.migration_id}, operation {index + 1}/{count}: `{op_id}` ({op_type}).",
        compute_fn=_operation,
        ins={
            name: In(Nothing, description="the previous operation, or a parent migration")
            for name in after_input_names(max(len(ref.parents), 1) if index == 0 else 1)
        },
        outs={"result": Out(Nothing, is_required=index < count - 1)},
        required_resource_keys={store_resource_key, run_resource_key},
        tags={
            **(op_tags or {}),
            "metaxy/migration": ref.migration_id,
            "metaxy/operation": op_id,
            "metaxy/operation_index": str(index + 1),
        },
        pool=pool,
    )


def run_operation_op(
    context: OpExecutionContext,
    ref: MigrationRef,
    index: int,
    op_id: str,
    count: int,
    *,
    asset_key: AssetKey,
    chain: ChainRefs,
    store_resource_key: str = STORE_RESOURCE_KEY,
    run_resource_key: str = RUN_RESOURCE_KEY,
) -> Iterator[Any]:
    """The body of a migration operation's op (see the module docstring)."""
    store_resource: MetaxyStoreResource = getattr(context.resources, store_resource_key)
    run: MetaxyRunResource = getattr(context.resources, run_resource_key)
    dry_run, in_asset_job, is_last = run.dry_run, context.has_assets_def, index == count - 1
    mid = ref.migration_id
    if not dry_run and not in_asset_job:
        raise MetaxyPlanOnlyError(
            f"this job only plans migrations and was launched with dry_run: false; launch the apply job "
            f"(or materialize the asset {asset_key.to_user_string()}) to apply {mid}"
        )
    setup = open_run(store_resource)
    store, secrets = setup.store, setup.secrets
    with setup.errors():
        # The executor imports the entrypoints first: a .py migration may import the project's modules.
        executor = setup.executor(
            run_id=context.run_id,
            force=run.force,
            on_step=lambda step: context.log.info(events.describe_step(mid, step, secrets)),
            on_progress=throttled(lambda progress: context.log.info(progress.describe())),
            log=context.log,
        )
        executor.lock = run_lease(context.run_id, context.run.root_run_id, store)  # shared by the run's steps
        migration = ref.load()
        if ref.op_labels and tuple(migration.operation_labels(store=store)) != ref.op_labels:
            raise MetaxyMigrationChangedError(
                f"the operations of migration {mid} are now {migration.operation_labels(store=store)}, but "
                f"the code location was loaded with {list(ref.op_labels)}; reload the code location, then "
                "launch the run again"
            )
        state = executor.state(mid)
        already = state.completed
        steps = []
        if already:
            context.log.info(f"migration {mid} is already applied in {store.root_uri}; nothing to do")
        else:
            if index == 0 and not dry_run:
                executor.check_parent(migration)
            context.log.info(
                f"{'planning' if dry_run else 'applying'} {mid}, operation {index + 1}/{count} ({op_id})"
            )
            if ref.op_labels:
                steps = executor.run_operation(migration, index, dry_run=dry_run, state=state)
            else:
                steps = executor.apply_migration(migration, dry_run=dry_run).steps

    if dry_run:
        if not already or is_last:
            context.log_event(
                events.plan_observation(
                    asset_key,
                    migration,
                    op_index=index,
                    op_count=len(ref.op_labels),
                    op_id=op_id,
                    steps=steps,
                    status=RunStatus.ALREADY_APPLIED if already else RunStatus.PLANNED,
                    secrets=secrets,
                )
            )
            for observation in events.feature_plan_observations(migration, steps, chain.feature_key):
                context.log_event(observation)
        if is_last and in_asset_job:
            _plan_the_rest_of_the_selection(context, chain, mid, setup, executor)
            return
        yield Output(None)
        return
    with setup.errors():
        final = executor.state(mid)
        for materialization in events.feature_events(
            migration,
            [s for s in final.steps.values() if s.run_id == context.run_id and s.op_index == index],
            chain.feature_key,
            store=store,
            graph=setup.graph,
            count_rows=chain.count_rows,
            secrets=secrets,
        ):
            context.log_event(materialization)
    if is_last:
        if already:  # applied elsewhere (the CLI?): its feature tables, unless Dagster shows them already
            with setup.errors():
                for materialization in catch_up_features(
                    context.instance,
                    asset_key,
                    migration,
                    final,
                    chain.feature_key,
                    store=store,
                    graph=setup.graph,
                    count_rows=chain.count_rows,
                    secrets=secrets,
                ):
                    context.log_event(materialization)
        yield Output(
            None,
            metadata=events.materialization_metadata(
                migration, final, already_applied=already, secrets=secrets
            ),
        )
    else:
        yield Output(None)


def _plan_the_rest_of_the_selection(
    context: OpExecutionContext, chain: ChainRefs, mid: str, setup: MetaxyRun, executor: Any
) -> None:
    """In an asset job's dry run: plan, in chain order, every selected migration no op of this run reaches.

    A planned migration is not materialized, so Dagster skips whatever follows it in the run. The selected
    migrations whose ops do run are the roots of the selection (no selected parent); the first of them plans
    the others here, so the run plans its whole selection, each migration once.
    """
    keys = context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys
    selected = chain.selected(keys)
    roots = chain.roots(selected)
    if not roots or roots[0] != mid:
        if mid in roots:
            context.log.info(
                f"dry run: the migrations after {mid} in this selection are planned by {roots[0]}"
            )
        return
    rest = [m for m in selected if m not in roots]
    if not rest:
        return
    context.log.info(
        f"dry run: {mid} is not materialized, so Dagster skips what follows it; planning the rest of the "
        f"selection here, in chain order: {', '.join(rest)}"
    )
    with setup.errors():
        for other in rest:
            migration = chain.refs[other].load()
            result = executor.apply_migration(migration, dry_run=True)
            context.log_event(
                events.plan_observation(
                    chain.keys[other],
                    migration,
                    op_index=0,
                    op_count=0,
                    op_id="",
                    steps=result.steps,
                    status=result.status,
                    secrets=setup.secrets,
                )
            )
            for observation in events.feature_plan_observations(migration, result.steps, chain.feature_key):
                context.log_event(observation)
