"""The two migration jobs, both launchable from the UI.

* **apply** (``metaxy_migrations_apply``): an asset job over every migration asset and its blocking check.
  Applied migrations are no-ops, pending ones are applied in chain order; a sensor or a user may select a
  subset.
* **plan** (``metaxy_migrations_plan``): an op job over the *same* graphs, wired in chain order. It only
  plans: its run resource has no ``dry_run`` at all, so ``dry_run: false`` is refused by config validation,
  before a run exists. Its outputs are not assets, so it never records a materialization and plans every
  pending migration of the chain in one run; each plan is attached to its asset as an observation.

The apply job plans too with ``dry_run: true``: every selected pending migration, in chain order (see
:mod:`metaxy_dagster.ops`), recording observations only.

Runs carry the tag ``metaxy/migrations: apply|plan``; add a run-level limit in the instance's run coordinator
(``tag_concurrency_limits: [{key: metaxy/migrations, value: apply, limit: 1}]``) and a limit of 1 on the ops'
pool (``metaxy_migrations``) so migration runs never overlap, on top of the store's own lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DependencyDefinition,
    ExecutorDefinition,
    GraphDefinition,
    JobDefinition,
    define_asset_job,
)

from metaxy_dagster._compat import UnresolvedAssetJobDefinition
from metaxy_dagster.resources import RUN_RESOURCE_KEY, MetaxyPlanRunResource

APPLY_JOB_NAME = "metaxy_migrations_apply"
PLAN_JOB_NAME = "metaxy_migrations_plan"
RUN_KIND_TAG = "metaxy/migrations"


def run_config_for(
    *, dry_run: bool, force: bool = False, run_resource_key: str = RUN_RESOURCE_KEY
) -> dict[str, Any]:
    """The run configuration that sets ``dry_run`` (and ``force``) for a run of the apply job (the plan job
    takes none: it always plans).

    Example:
        >>> run_config_for(dry_run=True)
        {'resources': {'metaxy_run': {'config': {'dry_run': True, 'force': False}}}}
    """
    return {"resources": {run_resource_key: {"config": {"dry_run": dry_run, "force": force}}}}


def takes_dry_run(job: object) -> bool:
    """Whether ``job`` has a ``dry_run`` switch; the plan job (run tag ``metaxy/migrations: plan``) has
    none."""
    return (getattr(job, "run_tags", None) or {}).get(RUN_KIND_TAG) != "plan"


def build_apply_job(
    *,
    assets: Sequence[AssetsDefinition],
    name: str = APPLY_JOB_NAME,
    run_resource_key: str = RUN_RESOURCE_KEY,
    executor_def: ExecutorDefinition | None = None,
    tags: Mapping[str, str] | None = None,
) -> UnresolvedAssetJobDefinition:
    """Asset job applying the pending migrations among ``assets`` (and running their checks)."""
    return define_asset_job(
        name=name,
        selection=AssetSelection.assets(*assets),
        config=run_config_for(dry_run=False, run_resource_key=run_resource_key),
        description=(
            "Apply pending metaxy migrations in chain order (applied ones are no-ops) and verify each with "
            "its blocking check. Set resources.metaxy_run.config.dry_run: true to plan every selected "
            "migration instead (observations only, nothing written)."
        ),
        run_tags={RUN_KIND_TAG: "apply", **(tags or {})},
        executor_def=executor_def,
    )


def build_plan_job(
    *,
    assets: Sequence[AssetsDefinition],
    name: str = PLAN_JOB_NAME,
    run_resource_key: str = RUN_RESOURCE_KEY,
    executor_def: ExecutorDefinition | None = None,
    tags: Mapping[str, str] | None = None,
    resource_defs: Mapping[str, object] | None = None,
) -> JobDefinition:
    """Op job planning (dry run) every pending migration among ``assets``, in chain order; writes nothing.

    Its ``run_resource_key`` resource is a :class:`~metaxy_dagster.resources.MetaxyPlanRunResource` (no
    ``dry_run`` field), bound to the job, so no run configuration can turn it into an apply. A job that binds
    one resource must bind all: give the store resource in ``resource_defs``
    (``{"metaxy_store": MetaxyStoreResource(...)}``)."""
    by_key = {a.key: a for a in assets}
    dependencies: dict[str, dict[str, DependencyDefinition]] = {}
    for asset in assets:
        for input_name, key in asset.keys_by_input_name.items():
            parent = by_key.get(key)
            if parent is not None:
                output = next(o for o, k in parent.keys_by_output_name.items() if k == key)
                dependencies.setdefault(asset.node_def.name, {})[input_name] = DependencyDefinition(
                    parent.node_def.name, output
                )  # a merge migration has one input per parent
    graph = GraphDefinition(
        name=name,
        description=(
            "Plan (dry run) the pending metaxy migrations in chain order: writes nothing to the store and "
            "records no materialization; each migration's plan is attached to its asset as an observation."
        ),
        node_defs=[a.node_def for a in assets],
        dependencies=dependencies,
    )
    return graph.to_job(
        run_tags={RUN_KIND_TAG: "plan", **(tags or {})},
        executor_def=executor_def,
        resource_defs={**(resource_defs or {}), run_resource_key: MetaxyPlanRunResource()},
    )
