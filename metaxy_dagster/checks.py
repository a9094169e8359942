"""Blocking asset checks: a migration is verified after it is applied.

Each check asks :func:`metaxy_core.migrations.verify.verify_migration` (the verdict of ``metaxy migrations
verify``): the migration's progress is complete and no affected feature still has samples only at the old
feature version that could have been carried over. The check is blocking, so a failure stops the migrations
that follow.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetChecksDefinition, asset_check

from metaxy_core.errors import redact
from metaxy_core.migrations import MigrationChain
from metaxy_core.migrations.verify import verify_migration
from metaxy_dagster import events
from metaxy_dagster._runtime import MigrationRef, definition_errors, open_run
from metaxy_dagster.resources import STORE_RESOURCE_KEY, MetaxyStoreResource
from metaxy_dagster.translator import MetaxyMigrationTranslator


def build_migration_checks(
    *,
    chain: MigrationChain,
    translator: MetaxyMigrationTranslator | None = None,
    store_resource_key: str = STORE_RESOURCE_KEY,
) -> list[AssetChecksDefinition]:
    """One blocking "verified" check per migration (none when the translator disables checks)."""
    translator = translator or MetaxyMigrationTranslator()
    checks = []
    for migration in chain:
        with definition_errors(migration):
            spec = translator.get_asset_check_spec(migration, chain)
            if spec is not None:
                checks.append(
                    _build_check(
                        MigrationRef.of(migration),
                        spec.asset_key,
                        spec.name,
                        spec.description,
                        store_resource_key,
                    )
                )
    return checks


def _build_check(
    ref: MigrationRef, asset_key: object, name: str, description: str | None, store_resource_key: str
) -> AssetChecksDefinition:
    @asset_check(
        asset=asset_key,  # type: ignore[arg-type]
        name=name,
        description=description,
        blocking=True,
        required_resource_keys={store_resource_key},
    )
    def _check(context):  # noqa: ANN001 - Dagster inspects the annotation; leave it blank
        resource: MetaxyStoreResource = getattr(context.resources, store_resource_key)
        run = open_run(resource)
        with run.errors():
            graph = run.graph  # the entrypoints first: a .py migration may import the project's modules
            verification = verify_migration(run.store, ref.load(), graph=graph)
        context.log.info(redact(verification.description, run.secrets))
        return events.check_result(verification, run.secrets)

    return _check


__all__: Sequence[str] = ["build_migration_checks"]
