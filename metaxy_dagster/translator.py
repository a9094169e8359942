"""The one place to change how migrations and feature tables look in Dagster: keys, groups, tags, kinds,
metadata, automation conditions, checks.

Modelled on ``DagsterDbtTranslator``: :meth:`MetaxyMigrationTranslator.get_asset_spec` (a migration) and
:meth:`~MetaxyMigrationTranslator.get_feature_asset_spec` (a feature table) are assembled from small getters;
subclass and override the ones you need. Dependencies are built with :meth:`get_asset_key` and
:meth:`get_feature_asset_key`, so a custom key propagates to every asset that depends on it.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    BetaWarning,
    CodeReferencesMetadataValue,
    LocalFileCodeReference,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
)

from metaxy_core.errors import redact
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.graph.spec import FeatureSpec
from metaxy_core.migrations import Migration, MigrationChain
from metaxy_core.migrations.models import INITIAL, DiffMigration, diff_affected
from metaxy_core.migrations.snapshot_files import SnapshotSummary
from metaxy_core.store import provenance

DEFAULT_KEY_PREFIX = ("metaxy", "migrations")
DEFAULT_GROUP_NAME = "metaxy_migrations"
DEFAULT_FEATURE_GROUP_NAME = "metaxy_features"
CHECK_NAME = "metaxy_migration_verified"
#: metadata entry naming the feature an asset stands for (upstream Metaxy's convention: ``"video/raw"``)
FEATURE_METADATA_KEY = "metaxy/feature"
#: the kinds (UI icons) of migration and feature assets
KINDS = frozenset({"metaxy", "deltalake"})


@dataclass(frozen=True)
class MetaxyMigrationTranslatorSettings:
    """Switches for :class:`MetaxyMigrationTranslator`.

    Args:
        key_prefix: asset keys are ``[*key_prefix, migration_id]``.
        group_name: the asset group of every migration.
        enable_asset_checks: one blocking "verified after apply" check per migration.
        enable_code_references: link each asset to its migration file or feature class
            (``dagster/code_references``; see ``link_code_references_to_git`` in docs/dagster.md).
        feature_group_name: the asset group of every feature table.
        enable_row_counts: count a feature's rows (``dagster/row_count``) when a migration writes it (one
            read of the feature's current rows per written feature and migration).
    """

    key_prefix: tuple[str, ...] = DEFAULT_KEY_PREFIX
    group_name: str = DEFAULT_GROUP_NAME
    enable_asset_checks: bool = True
    enable_code_references: bool = True
    feature_group_name: str = DEFAULT_FEATURE_GROUP_NAME
    enable_row_counts: bool = True


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
        return set(KINDS)

    def get_automation_condition(self, migration: Migration) -> AutomationCondition | None:
        """Declarative automation of the migration's asset; none by default (the sensor and schedule apply
        migrations).

        Example:
            >>> def get_automation_condition(self, migration):
            ...     return AutomationCondition.eager()
        """
        return None

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
                metadata["dagster/code_references"] = _code_reference(
                    migration.source_path, 1, f"migration {migration.migration_id}"
                )
        return metadata

    def get_feature_keys(self, migration: Migration, graph: FeatureGraph) -> list[FeatureKey]:
        """The features a migration affects, known from files alone: the features its snapshot diff changes
        (from its snapshot files), those its operations name, and those a ``features`` class attribute
        declares (for a CustomMigration, whose ``execute`` names nothing); upstream first. Feeds the lineage
        migration -> features.

        Raises:
            SnapshotFileError: a snapshot file the diff needs is missing or damaged.
        """
        code = _code_summary(graph)
        keys: set[str] = set()
        if isinstance(migration, DiffMigration):

            def summary(version: str) -> Any:
                if version == graph.snapshot_version:
                    return code
                files = migration.snapshot_files
                if files is None:  # built in memory: no files beside it
                    return SnapshotSummary.of(migration.snapshot_graph(version))
                return files.summary(version, needed_by=f"migration {migration.migration_id}")

            keys.update(
                diff_affected(
                    summary(migration.from_snapshot_version), summary(migration.to_snapshot_version)
                )
            )  # type: ignore[arg-type]
        for op in migration.operations():
            keys.update(str(k) for k in getattr(op, "features", None) or ())
            if getattr(op, "feature_key", None):
                keys.add(str(op.feature_key))  # type: ignore[attr-defined]
        declared = getattr(type(migration), "features", None)
        if isinstance(declared, (list, tuple)):
            keys.update(str(FeatureKey(k)) for k in declared)
        order = {k: i for i, k in enumerate(code.keys)}
        return [FeatureKey(k) for k in sorted(keys, key=lambda k: (order.get(k, len(order)), k))]

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
            automation_condition=self.get_automation_condition(migration),
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

    # ------------------------------------------------------------------ feature tables
    def get_feature_asset_key(self, feature: FeatureKey) -> AssetKey:
        """``AssetKey(feature.parts)``: ``video/raw`` is the asset ``video/raw``.

        Example:
            >>> def get_feature_asset_key(self, feature):
            ...     return AssetKey(["features", *feature.parts])
        """
        return AssetKey(list(feature.parts))

    def get_feature_group_name(self, spec: FeatureSpec) -> str | None:
        """``"metaxy_features"`` (from the settings)."""
        return self.settings.feature_group_name

    def get_feature_description(self, spec: FeatureSpec, graph: FeatureGraph) -> str:
        """The feature class's docstring (or a generic line), its fields and id columns."""
        cls = graph.feature_class(spec.key)
        doc = (
            inspect.cleandoc(cls.__dict__["__doc__"])
            if cls is not None and cls.__dict__.get("__doc__")
            else None
        )
        fields = ", ".join(f"`{f.key}` (code version {f.code_version})" for f in spec.fields)
        return "\n\n".join(
            [
                doc or f"Metaxy feature {spec.key}.",
                f"Fields: {fields}. Id columns: {', '.join(spec.id_columns)}.",
            ]
        )

    def get_feature_tags(self, spec: FeatureSpec) -> dict[str, str]:
        """Asset tags of a feature table; none by default."""
        return {}

    def get_feature_kinds(self, spec: FeatureSpec) -> set[str]:
        """``{"metaxy", "deltalake"}``."""
        return set(KINDS)

    def get_feature_owners(self, spec: FeatureSpec) -> list[str]:
        """Owners of a feature table; none by default."""
        return []

    def get_feature_code_version(self, spec: FeatureSpec, graph: FeatureGraph) -> str:
        """The feature version: a code change that changes the feature marks its asset's code as changed."""
        return graph.feature_version(spec.key)

    def get_feature_automation_condition(self, spec: FeatureSpec) -> AutomationCondition | None:
        """Declarative automation of a feature table (it is produced by your pipeline); none by default."""
        return None

    def get_feature_metadata(
        self, spec: FeatureSpec, graph: FeatureGraph, table_uri: str | None = None
    ) -> dict[str, Any]:
        """Definition metadata: the feature key and versions, the Delta table (``dagster/table_name``,
        ``dagster/uri``, credentials removed), its columns (``dagster/column_schema``: user columns from the
        class, then the ``metaxy_*`` system columns) and a code reference to the feature class."""
        metadata: dict[str, Any] = {
            FEATURE_METADATA_KEY: str(spec.key),
            "metaxy/feature_version": graph.feature_version(spec.key),
            "metaxy/field_versions": MetadataValue.json(graph.field_versions(spec.key)),
            "metaxy/id_columns": MetadataValue.json(list(spec.id_columns)),
            "dagster/table_name": spec.key.to_table_name(),
            "dagster/column_schema": feature_column_schema(spec, graph),
        }
        if table_uri:
            metadata["dagster/uri"] = redact(table_uri)
        cls = graph.feature_class(spec.key)
        if self.settings.enable_code_references and cls is not None:
            where = _class_location(cls)
            if where is not None:
                metadata["dagster/code_references"] = _code_reference(
                    where[0], where[1], f"feature {spec.key}"
                )
        return metadata

    def get_feature_asset_spec(
        self,
        spec: FeatureSpec,
        graph: FeatureGraph,
        *,
        deps: Sequence[AssetKey] = (),
        table_uri: str | None = None,
    ) -> AssetSpec:
        """The spec of a feature table's asset (external: your pipeline writes it, migrations rewrite it).

        Args:
            deps: the upstream features' assets and the migrations that write this feature.
            table_uri: the feature's Delta table (credentials removed by the caller).
        """
        return AssetSpec(
            key=self.get_feature_asset_key(spec.key),
            deps=list(deps),
            description=self.get_feature_description(spec, graph),
            metadata=self.get_feature_metadata(spec, graph, table_uri),
            group_name=self.get_feature_group_name(spec),
            code_version=self.get_feature_code_version(spec, graph),
            owners=self.get_feature_owners(spec),
            tags=self.get_feature_tags(spec),
            kinds=self.get_feature_kinds(spec),
            automation_condition=self.get_feature_automation_condition(spec),
        )


#: the system columns every feature table carries, with their types (see metaxy_core.store.provenance)
_SYSTEM_COLUMNS = {
    provenance.PROVENANCE_BY_FIELD: ("struct", "one provenance hash per field"),
    provenance.PROVENANCE: ("string", "hash of the field provenances"),
    provenance.DATA_VERSION_BY_FIELD: ("struct", "one data version per field"),
    provenance.DATA_VERSION: ("string", "hash of the data versions"),
    provenance.FEATURE_VERSION: ("string", "feature version the row was written under"),
    provenance.SNAPSHOT_VERSION: ("string", "snapshot version the row was written under"),
    provenance.CREATED_AT: ("timestamp(us, UTC)", "when the row was written (information only)"),
    provenance.WRITE_ID: ("string", "the write (e.g. a migration step) that wrote the row"),
}


def feature_column_schema(spec: FeatureSpec, graph: FeatureGraph) -> TableSchema:
    """The columns of a feature's table: id columns, the class's typed user columns, the system columns."""
    cls = graph.feature_class(spec.key)
    user = cls.user_columns() if cls is not None and hasattr(cls, "user_columns") else {}
    fields = ", ".join(f.to_table_name() for f in (f.key for f in spec.fields))
    columns = [
        TableColumn(
            name,
            _type_name(user[name]) if name in user else "string",
            description="id column",
            constraints=TableColumnConstraints(nullable=False),
        )
        for name in spec.id_columns
    ]
    columns += [TableColumn(name, _type_name(t)) for name, t in user.items() if name not in spec.id_columns]
    for name, (kind, description) in _SYSTEM_COLUMNS.items():
        if kind == "struct":
            kind = f"struct<{fields}>"
        columns.append(TableColumn(name, kind, description=f"metaxy system column: {description}"))
    return TableSchema(columns=columns)


def _type_name(annotation: object) -> str:
    """``str`` -> ``"str"``, ``list[float]`` -> ``"list[float]"``, ``datetime`` -> ``"datetime"``."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return re.sub(r"\b(?:typing|datetime|builtins)\.", "", str(annotation))


_CODE_SUMMARIES: dict[tuple[int, str], SnapshotSummary] = {}


def _code_summary(graph: FeatureGraph) -> SnapshotSummary:
    """The code graph's summary, computed once per graph and version (not once per migration)."""
    key = (id(graph), graph.snapshot_version)
    summary = _CODE_SUMMARIES.get(key)
    if summary is None:
        if len(_CODE_SUMMARIES) > 8:
            _CODE_SUMMARIES.clear()
        summary = _CODE_SUMMARIES[key] = SnapshotSummary.of(graph)
    return summary


def _code_reference(path: Path | str, line: int, label: str) -> CodeReferencesMetadataValue:
    with warnings.catch_warnings():  # code references are beta in Dagster 1.13; we pin it
        warnings.simplefilter("ignore", BetaWarning)
        return CodeReferencesMetadataValue(
            code_references=[
                LocalFileCodeReference(file_path=str(Path(path).resolve()), line_number=line, label=label)
            ]
        )


def _class_location(cls: type) -> tuple[str, int] | None:
    """(file, line) of a class statement, found by scanning its module's file once (``inspect.getsourcelines``
    parses the whole module per class: too slow for a code location with hundreds of features)."""
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:  # built in a notebook or by exec
        return None
    if path is None:
        return None
    line = _class_lines(path).get(cls.__name__)
    return (path, line) if line is not None else (path, 1)


@lru_cache(maxsize=256)
def _class_lines(path: str) -> dict[str, int]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return {}
    found: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.match(r"\s*class\s+([A-Za-z_][A-Za-z0-9_]*)", line)
        if match:
            found.setdefault(match.group(1), number)
    return found
