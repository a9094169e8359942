"""The one place to change how migrations look in Dagster: keys, groups, tags, kinds, metadata, checks.

Modelled on ``DagsterDbtTranslator``: :meth:`MetaxyMigrationTranslator.get_asset_spec` is assembled from small
getters; subclass and override the ones you need. Dependencies are built with :meth:`get_asset_key`, so a
custom key propagates to the children of a migration.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetKey,
    AssetSpec,
    BetaWarning,
    CodeReferencesMetadataValue,
    LocalFileCodeReference,
    MetadataValue,
)

from metaxy_core.migrations import Migration, MigrationChain
from metaxy_core.migrations.models import INITIAL

DEFAULT_KEY_PREFIX = ("metaxy", "migrations")
DEFAULT_GROUP_NAME = "metaxy_migrations"
CHECK_NAME = "metaxy_migration_verified"


@dataclass(frozen=True)
class MetaxyMigrationTranslatorSettings:
    """Switches for :class:`MetaxyMigrationTranslator`.

    Args:
        key_prefix: asset keys are ``[*key_prefix, migration_id]``.
        group_name: the asset group of every migration.
        enable_asset_checks: one blocking "verified after apply" check per migration.
        enable_code_references: link each asset to its migration file (``dagster/code_references``).
    """

    key_prefix: tuple[str, ...] = DEFAULT_KEY_PREFIX
    group_name: str = DEFAULT_GROUP_NAME
    enable_asset_checks: bool = True
    enable_code_references: bool = True


class MetaxyMigrationTranslator:
    """Maps a metaxy :class:`~metaxy_core.migrations.Migration` to Dagster asset attributes.

    Example:
        >>> class MyTranslator(MetaxyMigrationTranslator):
        ...     def get_asset_key(self, migration):
        ...         return AssetKey(["warehouse", "migrations", migration.migration_id])
        >>> build_migration_definitions(translator=MyTranslator())
    """

    def __init__(self, settings: MetaxyMigrationTranslatorSettings | None = None) -> None:
        self._settings = settings or MetaxyMigrationTranslatorSettings()

    @property
    def settings(self) -> MetaxyMigrationTranslatorSettings:
        return self._settings

    # ------------------------------------------------------------------ getters
    def get_asset_key(self, migration: Migration) -> AssetKey:
        """``AssetKey(["metaxy", "migrations", <migration_id>])``.

        Example:
            >>> def get_asset_key(self, migration):
            ...     return AssetKey(["ml", migration.migration_id])
        """
        return AssetKey([*self.settings.key_prefix, migration.migration_id])

    def get_group_name(self, migration: Migration) -> str | None:
        """``"metaxy_migrations"`` (from the settings).

        Example:
            >>> def get_group_name(self, migration):
            ...     return "data_migrations"
        """
        return self.settings.group_name

    def get_tags(self, migration: Migration) -> dict[str, str]:
        """Asset tags; by default the migration kind (``metaxy/migration_kind``).

        Example:
            >>> def get_tags(self, migration):
            ...     return {**super().get_tags(migration), "team": "ml-platform"}
        """
        return {"metaxy/migration_kind": migration.kind}

    def get_kinds(self, migration: Migration) -> set[str]:
        """``{"metaxy", "deltalake"}`` (shown as icons in the UI)."""
        return {"metaxy", "deltalake"}

    def get_owners(self, migration: Migration) -> list[str]:
        """Asset owners (emails or ``team:name``); none by default."""
        return []

    def get_description(self, migration: Migration) -> str:
        """The migration's description (or its class docstring) and where it lives."""
        summary = migration.summary().strip()
        lines = [summary or f"Metaxy migration {migration.migration_id}."]
        if getattr(migration, "from_snapshot_version", None):
            lines.append(
                f"Moves stored metadata from snapshot {migration.from_snapshot_version} "  # type: ignore[attr-defined]
                f"to {migration.to_snapshot_version}."  # type: ignore[attr-defined]
            )
        if migration.source_path is not None:
            lines.append(f"File: `{migration.source_path.name}`.")
        return "\n\n".join(lines)

    def get_code_version(self, migration: Migration) -> str:
        """The migration's checksum: editing the file marks the asset's code version as changed."""
        return migration.checksum

    def get_metadata(self, migration: Migration) -> dict[str, Any]:
        """Definition metadata: kind, parent, snapshots, operation list, file and code reference.

        Example:
            >>> def get_metadata(self, migration):
            ...     return {**super().get_metadata(migration), "jira": "ML-123"}
        """
        labels = migration.operation_labels()
        metadata: dict[str, Any] = {
            "metaxy/migration_id": migration.migration_id,
            "metaxy/migration_kind": migration.kind,
            "metaxy/parent": ", ".join(migration.parents) or INITIAL,
            "metaxy/operations": MetadataValue.md(
                "\n".join(f"{i + 1}. `{op_id}` ({op_type})" for i, (op_id, op_type) in enumerate(labels))
                or "_no operations: applying records the migration as done_"
            ),
            "metaxy/operation_count": len(labels),
        }
        for attr in ("from_snapshot_version", "to_snapshot_version", "snapshot_version"):
            value = getattr(migration, attr, None)
            if value:
                metadata[f"metaxy/{attr}"] = value
        if migration.source_path is not None:
            metadata["metaxy/file"] = MetadataValue.path(str(migration.source_path))
            if self.settings.enable_code_references:
                with warnings.catch_warnings():  # code references are beta in Dagster 1.13; we pin it
                    warnings.simplefilter("ignore", BetaWarning)
                    metadata["dagster/code_references"] = CodeReferencesMetadataValue(
                        code_references=[
                            LocalFileCodeReference(
                                file_path=str(migration.source_path.resolve()),
                                line_number=1,
                                label=f"migration {migration.migration_id}",
                            )
                        ]
                    )
        return metadata

    # ------------------------------------------------------------------ specs
    def get_parent_asset_keys(self, migration: Migration, chain: MigrationChain) -> list[AssetKey]:
        """The keys of the migrations this one follows, via :meth:`get_asset_key`: none for the first, one,
        or both heads for a merge migration (so Dagster runs it after both branches)."""
        return [self.get_asset_key(parent) for parent in chain.parents_of(migration.migration_id)]

    def get_asset_spec(self, migration: Migration, chain: MigrationChain) -> AssetSpec:
        """The full spec of a migration's asset, built from the getters above."""
        return AssetSpec(
            key=self.get_asset_key(migration),
            deps=self.get_parent_asset_keys(migration, chain),
            description=self.get_description(migration),
            metadata=self.get_metadata(migration),
            group_name=self.get_group_name(migration),
            code_version=self.get_code_version(migration),
            owners=self.get_owners(migration),
            tags=self.get_tags(migration),
            kinds=self.get_kinds(migration),
        )

    def get_asset_check_spec(self, migration: Migration, chain: MigrationChain) -> AssetCheckSpec | None:
        """The blocking "verified after apply" check of a migration (None when checks are disabled)."""
        if not self.settings.enable_asset_checks:
            return None
        return AssetCheckSpec(
            name=CHECK_NAME,
            asset=self.get_asset_key(migration),
            blocking=True,
            description=(
                "Verifies the applied migration: its progress is complete and no affected feature is left "
                "with samples at the old feature version that could be carried over to the new one."
            ),
        )
