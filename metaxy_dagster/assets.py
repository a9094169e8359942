"""Graph-backed assets: one per migration, whose ops are the migration's operations in order.

The ops are chained with Nothing dependencies (no IO manager is involved) and the parent migration's asset is
the graph's upstream input (both heads' assets for a merge migration, one input each), so Dagster runs the
chain in order and re-executes from the failed operation. Step keys read ``<migration id>.<n>_<operation>``
(the graph is named after the migration, each op invoked under its position and operation id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetKey,
    AssetsDefinition,
    DependencyDefinition,
    GraphDefinition,
    InputMapping,
    NodeInvocation,
    OpDefinition,
    OutputMapping,
)

from metaxy_core.migrations import Migration, MigrationChain
from metaxy_dagster._runtime import ChainRefs, MigrationRef, definition_errors
from metaxy_dagster.errors import MetaxyDefinitionsError
from metaxy_dagster.fanout import build_fanout_graph, splits_into_units
from metaxy_dagster.ops import DEFAULT_POOL, after_input_names, build_operation_ops, sanitize_name
from metaxy_dagster.resources import RUN_RESOURCE_KEY, STORE_RESOURCE_KEY
from metaxy_dagster.translator import MetaxyMigrationTranslator

PARENT_INPUT = "parent"
RESULT_OUTPUT = "result"


def parent_input_names(count: int) -> list[str]:
    """Graph inputs for the parent migrations' assets: ``parent``, then ``parent_2``... (a merge)."""
    return [PARENT_INPUT if i == 0 else f"{PARENT_INPUT}_{i + 1}" for i in range(count)]


def build_migration_assets(
    *,
    chain: MigrationChain,
    translator: MetaxyMigrationTranslator | None = None,
    pool: str | None = DEFAULT_POOL,
    store_resource_key: str = STORE_RESOURCE_KEY,
    run_resource_key: str = RUN_RESOURCE_KEY,
    op_tags: Mapping[str, str] | None = None,
    feature_asset_keys: Mapping[str, AssetKey] | None = None,
    node_prefix: str = "",
    fan_out_stages: int = 0,
) -> list[AssetsDefinition]:
    """One graph-backed asset per migration of ``chain``, in chain order.

    Args:
        chain: the project's migrations (``MetaxyConfig.load_chain()``); nothing is read from the store.
        translator: customises keys, groups, tags, kinds, metadata, automation conditions (default
            :class:`MetaxyMigrationTranslator`).
        pool: Dagster concurrency pool of every op; limit it to 1 (``dagster instance concurrency set
            metaxy_migrations 1``) so migration ops never overlap across runs. ``None`` for no pool.
        store_resource_key: resource key of the :class:`~metaxy_dagster.MetaxyStoreResource`.
        run_resource_key: resource key of the :class:`~metaxy_dagster.MetaxyRunResource` (``dry_run``).
        op_tags: extra tags on every op (e.g. Kubernetes resources).
        feature_asset_keys: feature key -> the asset standing for it, for the events recorded on feature
            assets when a migration writes them (default: the translator's feature keys).
        node_prefix: prefix of the graph names (keeps two code locations' node names apart in one job).
        fan_out_stages: above 0, an operation that splits into units of work (reconciliation) is a graph
            fanning its units out over the executor's processes, this many layers deep (see
            :mod:`metaxy_dagster.fanout`); 0 runs each operation as one op.

    Raises:
        MetaxyDefinitionsError: the translator maps two migrations to one asset key.

    Example:
        >>> assets = build_migration_assets(chain=MetaxyConfig.load().load_chain())
    """
    translator = translator or MetaxyMigrationTranslator()
    refs = ChainRefs(
        feature_keys=dict(feature_asset_keys or {}),
        default_feature_key=translator.get_feature_asset_key,
        count_rows=translator.settings.enable_row_counts,
    )
    seen: dict[AssetKey, str] = {}
    for migration in chain:
        with definition_errors(migration):
            key = translator.get_asset_key(migration)
            if key in seen:
                raise MetaxyDefinitionsError(
                    f"migrations {seen[key]} and {migration.migration_id} both map to asset key "
                    f"{key.to_user_string()}; make MetaxyMigrationTranslator.get_asset_key return a unique "
                    "key per migration (include the migration id)"
                )
            seen[key] = migration.migration_id
            refs.keys[migration.migration_id] = key
            refs.refs[migration.migration_id] = MigrationRef.of(migration)
    assets: list[AssetsDefinition] = []
    for migration in chain:
        with definition_errors(migration):
            assets.append(
                _build_asset(
                    migration,
                    chain,
                    translator,
                    refs,
                    pool=pool,
                    store_resource_key=store_resource_key,
                    run_resource_key=run_resource_key,
                    op_tags=op_tags,
                    node_prefix=node_prefix,
                    fan_out_stages=fan_out_stages,
                )
            )
    return assets


def _build_asset(
    migration: Migration,
    chain: MigrationChain,
    translator: MetaxyMigrationTranslator,
    refs: ChainRefs,
    *,
    pool: str | None,
    store_resource_key: str,
    run_resource_key: str,
    op_tags: Mapping[str, str] | None,
    node_prefix: str,
    fan_out_stages: int = 0,
) -> AssetsDefinition:
    spec = translator.get_asset_spec(migration, chain)
    parent_keys = translator.get_parent_asset_keys(migration, chain)
    parent_inputs = dict(zip(parent_input_names(len(parent_keys)), parent_keys, strict=True))
    ref = refs.refs[migration.migration_id]
    shared: dict[str, Any] = {
        "asset_key": spec.key,
        "chain": refs,
        "pool": pool,
        "store_resource_key": store_resource_key,
        "run_resource_key": run_resource_key,
        "op_tags": op_tags,
        "name_prefix": node_prefix,
    }
    labels = list(ref.op_labels)
    nodes: list[OpDefinition | GraphDefinition] = list(build_operation_ops(ref, **shared))
    for i, (op_id, op_type) in enumerate(labels if fan_out_stages > 0 else []):
        if splits_into_units(op_type):  # this operation's steps run as units of work on the executor
            count = len(labels)
            nodes[i] = build_fanout_graph(ref, i, op_id, op_type, count, stages=fan_out_stages, **shared)
    # Each op is invoked under a short alias (`1_reconcile`): with the graph named after the migration, the
    # run view's step keys read `<migration id>.1_reconcile`, not the migration id three times.
    aliases = [
        f"{i + 1}_{sanitize_name(op_id)}" for i, (op_id, _) in enumerate(ref.op_labels or [("apply", "")])
    ]
    invocations = [NodeInvocation(op.name, alias=alias) for op, alias in zip(nodes, aliases, strict=True)]
    graph = GraphDefinition(
        name=node_prefix + sanitize_name(migration.migration_id),
        description=f"Operations of migration {migration.migration_id}, in order.",
        node_defs=nodes,
        dependencies={
            current: {"after": DependencyDefinition(previous.alias, RESULT_OUTPUT)}
            for previous, current in zip(invocations, invocations[1:], strict=False)
        }
        | {first: {} for first in invocations[:1]},
        input_mappings=[
            InputMapping(graph_input_name=name, mapped_node_name=aliases[0], mapped_node_input_name=op_input)
            for name, op_input in zip(parent_inputs, after_input_names(len(parent_inputs)), strict=True)
        ],
        output_mappings=[
            OutputMapping(
                graph_output_name=RESULT_OUTPUT,
                mapped_node_name=aliases[-1],
                mapped_node_output_name=RESULT_OUTPUT,
            )
        ],
    )
    kind_tags = {f"dagster/kind/{kind}": "" for kind in sorted(spec.kinds)}
    return AssetsDefinition.from_graph(
        graph,
        keys_by_input_name=parent_inputs,
        keys_by_output_name={RESULT_OUTPUT: spec.key},
        group_name=spec.group_name,
        descriptions_by_output_name={RESULT_OUTPUT: spec.description} if spec.description else None,
        metadata_by_output_name={RESULT_OUTPUT: dict(spec.metadata)},
        tags_by_output_name={RESULT_OUTPUT: {**spec.tags, **kind_tags}},
        owners_by_output_name={RESULT_OUTPUT: list(spec.owners)} if spec.owners else None,
        code_versions_by_output_name={RESULT_OUTPUT: spec.code_version},
        automation_conditions_by_output_name=(
            {RESULT_OUTPUT: spec.automation_condition} if spec.automation_condition is not None else None
        ),
    )
