"""Migration kinds, and the apply-phase validation context.

* :class:`DiffMigration` moves stored metadata from one pushed snapshot to another with a list of operations
  (YAML files are diff migrations);
* :class:`PythonMigration` is a diff migration whose operations are computed at run time;
* :class:`CustomMigration` hands full control to the user's ``execute``;
* :class:`FullGraphMigration` works inside one snapshot; its operations name their features.

Diff and full-graph migrations share :class:`OperationsMigration`, the one place operations are built and
checked. Results (:class:`~metaxy_core.migrations.results.MigrationResult`) live in ``results.py``.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from metaxy_core.errors import MetaxyError, format_validation_error, redact
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations.ops import BaseOperation, build_operation
from metaxy_core.migrations.snapshot_files import SnapshotFiles, UnavailableGraph
from metaxy_core.migrations.usercode import raising_function, user_code_error

if TYPE_CHECKING:
    from metaxy_core.store.delta import DeltaMetadataStore

MIGRATION_ID = re.compile(r"^\d{8}_\d{6}(_[A-Za-z0-9][A-Za-z0-9_\-]*)?$")
INITIAL = "initial"

#: the pydantic validation context's ``metaxy_phase`` just before a migration is applied (not when its file
#: loads): validators doing I/O, such as connectivity checks, should only run in this phase
APPLY_PHASE = "apply"


def apply_phase_context() -> dict[str, Any]:
    """The validation context the executor re-validates a migration with just before applying it."""
    return {"metaxy_phase": APPLY_PHASE}


def revalidate(migration: Migration, *, secrets: list[str] | tuple[str, ...] = ()) -> None:
    """Run the migration's validators again in the apply phase (connectivity checks and the like), just
    before it is applied or planned.

    Raises:
        MetaxyError: a validator refused (naming the file and, when it can be found, the validator).
        UserCodeError: a validator raised what pydantic does not wrap (a database driver's error...).
    """
    where = migration.source_path or migration.migration_id
    try:
        type(migration).model_validate(migration.model_dump(), context=apply_phase_context())
    except ValidationError as exc:
        method = raising_function(exc, migration.source_path)
        found = f" (validator {method})" if method else ""
        raise MetaxyError(
            redact(
                f"{where}: validation failed before any work: {format_validation_error(exc)}{found}", secrets
            )
        ) from None
    except MetaxyError:
        raise
    except Exception as exc:
        method = raising_function(exc, migration.source_path)
        name = f"validator {method}()" if method else "a validator"
        raise user_code_error(exc, where=where, method=name, secrets=secrets) from exc


def in_apply_phase(info: ValidationInfo) -> bool:
    """In a validator: ``True`` when the migration is about to be applied, ``False`` while its file loads.

    Example:
        >>> @field_validator("dsn")
        ... @classmethod
        ... def _reachable(cls, value, info):
        ...     if in_apply_phase(info):
        ...         connect(value).close()
        ...     return value
    """
    return bool(info.context) and info.context.get("metaxy_phase") == APPLY_PHASE


class Migration(BaseModel, ABC):
    """A step in the project's migration chain.

    Attributes:
        migration_id: ``YYYYMMDD_HHMMSS_description`` (the file name without extension, or its timestamp).
        created_at: when the migration was written; must carry a timezone.
        parent: the previous migration's id, or ``"initial"`` for the first one; a *merge* migration lists
            the heads it joins (``parent: [a, b]``, like Alembic's tuple ``down_revision``).
    """

    # validate_default: a .py migration sets its fields as class defaults, which must pass the validators too
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=True)

    kind: ClassVar[str] = "migration"

    migration_id: str
    created_at: datetime
    parent: str | list[str] = INITIAL
    description: str | None = None

    _source_path: Path | None = PrivateAttr(None)
    _checksum: str | None = PrivateAttr(None)
    _snapshot_files: SnapshotFiles | None = PrivateAttr(None)

    @field_validator("migration_id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not MIGRATION_ID.fullmatch(value):  # fullmatch: `$` would accept a trailing newline
            raise ValueError(
                f"migration id {value!r} must look like YYYYMMDD_HHMMSS_description (letters, digits, '_', "
                "'-')"
            )
        return value

    @field_validator("parent")
    @classmethod
    def _parent(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            if value != INITIAL and not MIGRATION_ID.fullmatch(value):
                raise ValueError(f"parent {value!r} must be 'initial' or another migration's id")
            return value
        if not value:
            raise ValueError("parent is an empty list; write 'initial' or the id(s) this migration follows")
        bad = [p for p in value if not MIGRATION_ID.fullmatch(p)]
        if bad:
            raise ValueError(
                f"parent {bad[0]!r}: a merge migration's parents must be migration ids (not 'initial')"
            )
        if len(set(value)) != len(value):
            raise ValueError(f"parent lists a migration twice ({', '.join(value)}); list each head once")
        if len(value) == 1:
            return value[0]  # `parent: [a]` is just `parent: a`
        return value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if not isinstance(
            value, datetime
        ):  # a .py migration re-annotated the field (`created_at: str = ...`)
            try:
                value = datetime.fromisoformat(str(value))
            except ValueError:
                raise ValueError(
                    f"created_at {value!r} is not a datetime; write e.g. datetime(2025, 1, 1, "
                    "tzinfo=timezone.utc)"
                ) from None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("created_at must be timezone-aware, e.g. '2025-01-01T00:00:00+00:00'")
        return value

    # ---------------------------------------------------------------- identity
    @property
    def source_path(self) -> Path | None:
        return self._source_path

    @property
    def parents(self) -> tuple[str, ...]:
        """The ids this migration follows: none for the first, one, or several for a merge migration."""
        if isinstance(self.parent, str):
            return () if self.parent == INITIAL else (self.parent,)
        return tuple(self.parent)

    @property
    def is_merge(self) -> bool:
        """Joins several heads of the chain (``parent: [a, b]``)."""
        return len(self.parents) > 1

    @property
    def checksum(self) -> str:
        """Content hash of the migration's file (or of its definition when it has no file)."""
        if self._checksum is None:
            from metaxy_core.graph.versions import digest

            self._checksum = digest(self.model_dump(mode="json"))
        return self._checksum

    def summary(self) -> str:
        return self.description or (type(self).__doc__ or "").strip().split("\n")[0]

    @property
    def snapshot_files(self) -> SnapshotFiles | None:
        """The snapshot files beside this migration's folder (``None`` when it was not loaded from a file)."""
        return self._snapshot_files

    # ---------------------------------------------------------------- snapshots
    def snapshot_graph(
        self, version: str, *, store: DeltaMetadataStore | None = None, project: str | None = None
    ) -> FeatureGraph:
        """The feature graph of snapshot ``version``: from the snapshot files beside the migration (what
        Dagster, which never reads the store at load, relies on), else from ``store``.

        Raises:
            SnapshotFileError: the file is damaged, or missing while no store can stand in (the message
                names ``metaxy push``, which writes it).
        """
        files = self._snapshot_files
        if files is not None and files.has(version):
            return files.load(version)
        if store is not None:
            return store.load_snapshot_graph(version, project=project or store.project)
        if files is None:
            raise MetaxyError(
                f"migration {self.migration_id} needs snapshot {version}, but it was not loaded from a "
                "migrations folder, so there are no snapshot files beside it; pass the store"
            )
        return files.load(version, needed_by=f"migration {self.migration_id}")

    def target_graph(
        self, graph: FeatureGraph | None = None, *, store: DeltaMetadataStore | None = None
    ) -> FeatureGraph:
        """The graph this migration moves stored metadata to: ``graph`` (the code's, default: the active one)
        unless the migration names another snapshot (see :meth:`snapshot_graph`)."""
        return graph if graph is not None else FeatureGraph.get_active()

    # ---------------------------------------------------------------- behaviour
    def resolve_graphs(
        self, store: DeltaMetadataStore, project: str, graph: FeatureGraph | None = None
    ) -> tuple[FeatureGraph | None, FeatureGraph]:
        """(from graph, to graph) this migration runs with; ``graph`` is the code's graph."""
        current = graph if graph is not None else FeatureGraph.get_active()
        return None, current

    def get_affected_features(self, store: DeltaMetadataStore, project: str) -> list[str]:
        """Keys (``"a/b"`` strings, as Metaxy returns them) of the features the migration's operations run
        for, upstream first. Override to filter (call ``super()``); keys or strings may be returned."""
        return []

    def execute(self, store: DeltaMetadataStore, project: str, *, dry_run: bool = False) -> Any:
        """Run this migration's operations through the engine and return a
        :class:`~metaxy_core.migrations.results.MigrationResult` (Metaxy's contract).

        Override it for hooks around the operations and call ``super().execute(...)``: the executor then runs
        the override as the migration's one step (``execute``), the operations inside it as steps of their
        own (resumable, attributed for rollback), and records what the override returns: a failed result, or
        an exception, fails the migration. Called directly, outside ``metaxy migrations apply``, it applies
        this one migration, as Metaxy's ``execute`` does.
        """
        from metaxy_core.migrations.execute import execute_operations

        return execute_operations(self, store, project, dry_run=dry_run)

    def operations(self, *, store: DeltaMetadataStore | None = None) -> list[BaseOperation]:
        """The migration's operations; ``store`` stands in for a snapshot file that is missing."""
        return []

    def operation_labels(self, *, store: DeltaMetadataStore | None = None) -> list[tuple[str, str]]:
        """(op id, op type) pairs known without running anything (for Dagster ops and plans); a migration
        whose ``execute`` is its own runs as one step, ``execute``."""
        if overrides_execute(self):
            return [("execute", f"{type(self).__module__}.{type(self).__qualname__}")]
        return [(op.op_id, op.type or op.import_path()) for op in self.operations(store=store)]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        user_operations = cls.__dict__.get("operations")
        if (
            cls.__module__ != __name__
            and inspect.isfunction(user_operations)
            and "build_operations" not in vars(cls)
        ):
            # Metaxy's PythonMigration lets `operations()` (a plain method) compute the operations: it is
            # this project's build_operations(), and `operations` stays the engine's validated list.
            cls.build_operations = user_operations  # type: ignore[method-assign]
            cls.operations = _engine_operations  # type: ignore[method-assign]


class OperationsMigration(Migration):
    """Base of the kinds whose work is a list of operations (:class:`DiffMigration`,
    :class:`FullGraphMigration`).

    The operations written in the file (``ops``, declared by each kind) are built and validated when the
    migration loads, so a bad operation names its file; :meth:`build_operations` returns them (a
    :class:`PythonMigration` computes its own at run time) and :meth:`operations` validates whatever it
    returned.
    """

    if TYPE_CHECKING:  # declared by each kind, after its own fields (the order of validation messages)
        ops: list[dict[str, Any]]

    _ops: list[BaseOperation] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _build_ops(self) -> OperationsMigration:
        self._ops = [build_operation(op) for op in self.ops]
        for op in self._ops:
            self.check_operation(op)
        return self

    def check_operation(self, op: BaseOperation) -> None:
        """Refuse an operation this kind cannot run (raise ``ValueError`` naming the fix); default: accept."""

    def build_operations(self) -> list[BaseOperation | dict[str, Any]]:
        return list(self._ops)

    @property
    def computes_operations(self) -> bool:
        """Its :meth:`build_operations` is code of its own (a PythonMigration's), not the file's ``ops``."""
        return type(self).build_operations not in _STATIC_BUILDERS

    def operations(self, *, store: DeltaMetadataStore | None = None) -> list[BaseOperation]:
        """The operations, validated. Code that computes them (:meth:`build_operations`) runs with the
        migration's target graph active (:meth:`target_graph`), in the CLI and in Dagster alike, so an applied
        migration builds the same operations however far the code has moved on."""
        if not self.computes_operations:
            return [build_operation(op) for op in self.build_operations()]
        try:
            graph = self.target_graph(FeatureGraph.get_active(), store=store)
        except MetaxyError as exc:  # raised where build_operations() reads the graph, if it does
            graph = UnavailableGraph(exc)
        with graph.use():
            return [build_operation(op) for op in self.build_operations()]


class DiffMigration(OperationsMigration):
    """Moves metadata from ``from_snapshot_version`` to ``to_snapshot_version`` with ``ops``.

    Affected features are those whose feature version differs between the two snapshots, plus their
    downstream features, in topological order.
    """

    kind: ClassVar[str] = "diff"

    from_snapshot_version: str
    to_snapshot_version: str
    ops: list[dict[str, Any]] = Field(default_factory=list)

    def target_graph(
        self, graph: FeatureGraph | None = None, *, store: DeltaMetadataStore | None = None
    ) -> FeatureGraph:
        current = graph if graph is not None else FeatureGraph.get_active()
        if current.snapshot_version == self.to_snapshot_version:
            return current
        return self.snapshot_graph(self.to_snapshot_version, store=store)

    def resolve_graphs(
        self, store: DeltaMetadataStore, project: str, graph: FeatureGraph | None = None
    ) -> tuple[FeatureGraph | None, FeatureGraph]:
        to_graph = self.target_graph(graph, store=store)
        from_graph = self.snapshot_graph(self.from_snapshot_version, store=store, project=project)
        return from_graph, to_graph

    def get_affected_features(
        self, store: DeltaMetadataStore, project: str, graph: FeatureGraph | None = None
    ) -> list[str]:
        from_graph, to_graph = self.resolve_graphs(store, project, graph)
        assert from_graph is not None
        return [str(k) for k in diff_affected(from_graph, to_graph)]


def diff_affected(from_graph: FeatureGraph, to_graph: FeatureGraph) -> list[FeatureKey]:
    """Features whose version differs between the graphs, plus their downstream, upstream first."""
    changed = [
        k
        for k in to_graph.keys
        if k in from_graph and from_graph.feature_version(k) != to_graph.feature_version(k)
    ]
    wanted = (set(changed) | set(to_graph.downstream(changed))) & {
        k for k in to_graph.keys if k in from_graph
    }
    return to_graph.topological_order(wanted)


class PythonMigration(DiffMigration):
    """A diff migration defined in a ``.py`` file; :meth:`build_operations` runs at execution time.

    Example:
        >>> class Refactor(PythonMigration):
        ...     migration_id: str = "20250101_000000_refactor"
        ...     ...
        ...     def build_operations(self):
        ...         return [DataVersionReconciliation()]
    """

    kind: ClassVar[str] = "python"

    def build_operations(self) -> list[BaseOperation | dict[str, Any]]:  # pragma: no cover - overridden
        return list(self._ops)


#: the builders that return the file's own ``ops`` (anything else is code computing operations)
_STATIC_BUILDERS = (OperationsMigration.build_operations, PythonMigration.build_operations)


class CustomMigration(Migration):
    """Full control: the user's :meth:`execute` does the work (validators run before it, at load time).

    The executor runs ``execute`` as one step inside a write scope, so rows it writes are attributed to the
    migration (progress, rollback) and a dry run cannot write by accident.
    """

    kind: ClassVar[str] = "custom"

    @abstractmethod
    def execute(self, store: DeltaMetadataStore, project: str, *, dry_run: bool = False) -> Any:  # type: ignore[override]
        """Do the migration; return the number of rows written (or a dict of rows per feature)."""

    def operation_labels(self, *, store: DeltaMetadataStore | None = None) -> list[tuple[str, str]]:
        return [("execute", f"{type(self).__module__}.{type(self).__qualname__}")]


class FullGraphMigration(OperationsMigration):
    """Operations inside one snapshot (``snapshot_version``, default: the code's); each names its features."""

    kind: ClassVar[str] = "full_graph"

    snapshot_version: str | None = None
    ops: list[dict[str, Any]] = Field(default_factory=list)

    def check_operation(self, op: BaseOperation) -> None:
        if not (getattr(op, "feature_key", None) or getattr(op, "features", None)):
            raise ValueError(
                f"operation {op.op_id}: a full-graph migration's operations must name their features "
                "(`feature_key` or `features`)"
            )

    def target_graph(
        self, graph: FeatureGraph | None = None, *, store: DeltaMetadataStore | None = None
    ) -> FeatureGraph:
        current = graph if graph is not None else FeatureGraph.get_active()
        if self.snapshot_version and self.snapshot_version != current.snapshot_version:
            return self.snapshot_graph(self.snapshot_version, store=store)
        return current

    def resolve_graphs(
        self, store: DeltaMetadataStore, project: str, graph: FeatureGraph | None = None
    ) -> tuple[FeatureGraph | None, FeatureGraph]:
        return None, self.target_graph(graph, store=store)

    def get_affected_features(
        self, store: DeltaMetadataStore, project: str, graph: FeatureGraph | None = None
    ) -> list[str]:
        _, to_graph = self.resolve_graphs(store, project, graph)
        keys: set[FeatureKey] = set()
        for op in self.operations():
            keys.update(getattr(op, "features", None) or [])
            if getattr(op, "feature_key", None):
                keys.add(op.feature_key)  # type: ignore[attr-defined]
        for key in keys:
            to_graph.spec(key)
        return [str(k) for k in to_graph.topological_order(keys)]


def affected_features(
    migration: Migration, store: DeltaMetadataStore, project: str, graph: FeatureGraph | None = None
) -> list[FeatureKey]:
    """``migration.get_affected_features`` as feature keys, with the code's ``graph`` when the method takes
    one (a user override may keep Metaxy's ``(store, project)`` signature).

    Raises:
        UserCodeError: a user override raised, or returned something that is not a list of feature keys
            (the message names the file and the method).
    """
    where = migration.source_path or migration.migration_id
    method = f"{type(migration).__qualname__}.get_affected_features()"
    try:
        if "graph" in inspect.signature(migration.get_affected_features).parameters:
            found = migration.get_affected_features(store, project, graph)  # type: ignore[call-arg]
        else:
            found = migration.get_affected_features(store, project)
        return [k if isinstance(k, FeatureKey) else FeatureKey(k) for k in found]
    except MetaxyError as exc:
        if not overrides(migration, "get_affected_features"):
            raise  # the engine's own error (a snapshot never pushed...): already worded for users
        raise user_code_error(exc, where=where, method=method) from exc
    except Exception as exc:  # the user's override failed
        raise user_code_error(exc, where=where, method=method) from exc


def overrides(migration: Migration | type[Migration], name: str) -> bool:
    """The migration's class (the user's) defines ``name`` rather than inheriting it from this module."""
    cls = migration if isinstance(migration, type) else type(migration)
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass.__module__ != __name__
    return False


def overrides_execute(migration: Migration | type[Migration]) -> bool:
    """``execute`` is the user's: the executor runs it as the migration's one step (a CustomMigration's
    always is; a PythonMigration's when overridden)."""
    return overrides(migration, "execute")


def unsupported_override(cls: type[Migration]) -> str | None:
    """Why a user's migration class cannot run as written (None: it can): a method the engine would never
    call is refused at load, never silently skipped."""
    name = cls.__qualname__
    if not issubclass(cls, (OperationsMigration, CustomMigration)) and not overrides_execute(cls):
        return (
            f"{name} subclasses Migration but does not implement execute(); implement "
            "execute(self, store, project, *, dry_run=False), or subclass PythonMigration (build_operations) "
            "or CustomMigration"
        )
    if issubclass(cls, CustomMigration):
        for method in ("build_operations", "operations"):
            if overrides(cls, method):
                return (
                    f"{name} is a CustomMigration, whose execute() is all that runs, so its {method}() would "
                    "never be called; subclass PythonMigration to run operations (and override execute() "
                    "for hooks around them), or call the operations from execute()"
                )
    for method, instead in (("compute_graph_diff", "get_affected_features()"), ("_get_graph_diff", None)):
        if overrides(cls, method):
            return (
                f"{name} overrides {method}(), a Metaxy internal this engine never calls; override "
                f"{instead or 'get_affected_features()'} to choose the affected features"
            )
    return None


def _engine_operations(
    self: OperationsMigration, *, store: DeltaMetadataStore | None = None
) -> list[BaseOperation]:
    return OperationsMigration.operations(self, store=store)
