"""Operations: the steps a migration performs, as validated data plus a registry by import path.

An operation's ``type`` in YAML is the import path of a :class:`BaseOperation` subclass. Resolution imports
the module and refuses anything that is not such a subclass (``os.system`` included), so a migration file can
never name arbitrary callables. Fields come only from the file or the constructor; no environment variable is
ever read implicitly (pydantic-settings behaviour is deliberately absent). A string field may reference one
explicitly, as ``${VAR}`` (Metaxy's syntax): the value is substituted when the operation is built, an unset
variable is an error, and the value is treated as a secret (scrubbed from every message metaxy shows).

Code written for Metaxy runs as it did there: an operation may implement Metaxy's per-feature
``execute_for_feature(store, feature_key, *, snapshot_version, from_snapshot_version, dry_run)`` instead of
:meth:`BaseOperation.run`, and ``features: [...]`` names the features an operation runs for.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import reprlib
from abc import ABC
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metaxy_core.errors import MetaxyError, format_validation_error, redact, register_secret
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import reconcile
from metaxy_core.migrations.context import OperationContext
from metaxy_core.migrations.results import StepOutcome, StepStatus, outcome_of
from metaxy_core.store.buckets import Partitioning


class OperationError(MetaxyError):
    """An operation is misconfigured or cannot be resolved."""


@dataclass(frozen=True)
class UnitOutcome:
    """What one unit of work (some buckets of one feature's step) did: rows written, commits made, and
    samples it could not do (reconciliation: no upstream rows at the new version)."""

    rows: int
    commits: int = 0
    skipped: int = 0


class BaseOperation(BaseModel, ABC):
    """Base of every migration operation.

    Subclasses declare their configuration as pydantic fields (validated when the migration file loads) and
    implement :meth:`run` for one feature, or Metaxy's :meth:`execute_for_feature`. ``features_for`` says
    which features the operation covers (``features`` when given, else the migration's affected ones); the
    executor records progress per (migration, operation index, feature), so a crash resumes at the first
    unfinished step and two operations on one feature are tracked separately.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str | None = Field(None, description="Import path of the operation class (set automatically).")
    id: str | None = Field(None, description="Stable name of the operation within its migration.")
    reason: str | None = Field(None, description="Why this operation exists (shown in plans and history).")
    features: list[FeatureKey] | None = Field(
        None, description="Run for these features (Metaxy's `features:`); default: the affected ones."
    )

    #: a short name used when ``id`` is not given
    default_id: ClassVar[str | None] = None
    #: what the operation does to its features, in messages ("the features to <verb>")
    features_verb: ClassVar[str] = "run it for"
    #: the methods a subclass implements, one of which the engine calls (see :meth:`implementation_error`)
    entry_points: ClassVar[tuple[str, ...]] = ("run", "execute_for_feature")

    @model_validator(mode="before")
    @classmethod
    def _substitute_env(cls, data: Any) -> Any:
        return substitute_env(data, where=f"operation {_label(data, cls)}")

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, value: Any) -> Any:
        if value is None:
            return None
        if not value:
            raise ValueError(
                f"`features` is empty; list the features to {cls.features_verb}, or omit it for all affected "
                "ones"
            )
        return [FeatureKey(v) for v in ([value] if isinstance(value, str) else value)]

    @property
    def op_id(self) -> str:
        return self.id or self.default_id or _snake(type(self).__name__)

    @classmethod
    def import_path(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def implemented(cls) -> list[str]:
        """The entry points this class (or a base below :class:`BaseOperation`) implements."""
        return [name for name in cls.entry_points if _overrides(cls, name)]

    @classmethod
    def implementation_error(cls) -> str | None:
        """Why the engine cannot run this class (None: it can): it implements none of its entry points,
        or several, of which the engine would call only one (a silently skipped method is worse than an
        error)."""
        done = cls.implemented()
        names = " or ".join(f"{n}()" for n in cls.entry_points)
        if not done:
            return f"{cls.__qualname__} is abstract (it implements none of {names}); name a concrete subclass"
        if len(done) > 1:
            return (
                f"{cls.__qualname__} implements {' and '.join(f'{n}()' for n in done)}, but the engine calls "
                f"exactly one of them; keep one ({names}) and delete the others"
            )
        return None

    def features_for(self, ctx: OperationContext) -> list[FeatureKey]:
        """Features this operation runs for: ``features`` when given, else the migration's affected ones."""
        if self.features is None:
            return list(ctx.affected)
        unknown = [f for f in self.features if f not in ctx.to_graph]
        if unknown:
            raise OperationError(
                f"{self.op_id}: feature(s) {', '.join(map(str, unknown))} are not in the feature graph; "
                "fix `features`"
            )
        return ctx.to_graph.topological_order(self.features)

    def run(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome:
        """Do (or, when ``ctx.dry_run``, count) the work for one feature.

        The default calls Metaxy's :meth:`execute_for_feature`; override one of the two.
        """
        return outcome_of(
            call_execute_for_feature(self, ctx, feature),
            method=f"{type(self).__qualname__}.execute_for_feature()",
        )

    # ------------------------------------------------------------ units of work (opt-in)
    def plan_units(self, ctx: OperationContext, feature: FeatureKey) -> Partitioning | None:
        """How the step for ``feature`` splits into units that may run in parallel, on other processes or
        hosts: buckets of samples, each unit one bucket (see :mod:`metaxy_core.migrations.units`). None (the
        default) runs the step as one unit through :meth:`run`. An operation opts in by overriding this,
        :meth:`run_unit` and, if it has something to say, :meth:`units_note`; its units must be independent
        (any order, any process) and a re-run of a finished unit must write nothing new."""
        return None

    def run_unit(
        self, ctx: OperationContext, feature: FeatureKey, partitioning: Partitioning, buckets: Collection[int]
    ) -> UnitOutcome:
        """Do the work of ``buckets`` of ``partitioning`` for ``feature`` (see :meth:`plan_units`)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not split into units")

    def units_note(self, feature: FeatureKey, skipped: int) -> str:
        """The step's note once all its units are done, from the samples they could not do."""
        return ""

    def execute_for_feature(
        self,
        store: Any,
        feature_key: str,
        *,
        snapshot_version: str,
        from_snapshot_version: str | None = None,
        dry_run: bool = False,
    ) -> int:
        """Metaxy's per-feature contract: do the work for ``feature_key`` (``"a/b"``) and return the rows
        written (or, in a dry run, that would be). Called once per target feature, upstream first."""
        raise NotImplementedError(f"{type(self).__qualname__}.execute_for_feature() is not implemented")


def call_execute_for_feature(op: BaseOperation, ctx: OperationContext, feature: FeatureKey) -> Any:
    """``op.execute_for_feature`` with the keywords its signature names: Metaxy 0.1.6 called them
    ``project_version`` / ``from_project_version``, later Metaxy ``snapshot_version`` /
    ``from_snapshot_version``."""
    params = inspect.signature(op.execute_for_feature).parameters
    old_names = "project_version" in params and "snapshot_version" not in params
    return op.execute_for_feature(
        ctx.store,
        str(feature),
        **{
            "project_version" if old_names else "snapshot_version": ctx.to_snapshot_version,
            "from_project_version" if old_names else "from_snapshot_version": ctx.from_snapshot_version,
        },
        dry_run=ctx.dry_run,
    )


class MetadataBackfill(BaseOperation, ABC):
    """A reusable backfill of one feature's metadata from an external source (S3, a database, ...).

    Subclass it, declare the source's configuration as fields, and implement either :meth:`execute` (called
    once, for ``feature_key``) or Metaxy's :meth:`execute_for_feature` (called once per target feature:
    ``feature_key``, or each of ``features``). Write with ``store.write_metadata``; the executor attributes
    the rows to this step (for progress and rollback).

    Example (YAML)::

        ops:
          - type: example_project.ops.S3VideoBackfill
            feature_key: video/files        # or Metaxy's `features: [video/files]`
            s3_bucket: prod-videos
    """

    entry_points: ClassVar[tuple[str, ...]] = ("execute", "execute_for_feature", "run")

    feature_key: FeatureKey | None = None

    @field_validator("feature_key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> Any:
        return FeatureKey(value) if value is not None and not isinstance(value, FeatureKey) else value

    @model_validator(mode="after")
    def _target(self) -> MetadataBackfill:
        if self.feature_key is None and not self.features:
            raise ValueError(
                "a backfill needs `feature_key` (or Metaxy's `features: [...]`): the feature it writes"
            )
        if self.feature_key is not None and self.features and self.features != [self.feature_key]:
            raise ValueError("give either `feature_key` or `features`, not both")
        if self.feature_key is None and self.features and len(self.features) == 1:
            object.__setattr__(self, "feature_key", self.features[0])  # execute() reads self.feature_key
        if type(self).implemented() == ["execute"] and self.features and len(self.features) > 1:
            raise ValueError(
                f"`features` lists {len(self.features)} features, but {type(self).__qualname__}.execute() "
                "runs once, for one feature; list one, or implement execute_for_feature() to be called per "
                "feature"
            )
        return self

    def features_for(self, ctx: OperationContext) -> list[FeatureKey]:
        if self.features:
            return super().features_for(ctx)
        assert self.feature_key is not None
        return [self.feature_key]

    def execute(
        self,
        store: Any,
        *,
        from_snapshot_version: str | None,
        to_snapshot_version: str,
        dry_run: bool = False,
    ) -> int:
        """Backfill ``feature_key`` and return the rows written (or, in a dry run, that would be)."""
        raise NotImplementedError(f"{type(self).__qualname__}.execute() is not implemented")

    def run(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome:
        name = type(self).__qualname__
        if "execute_for_feature" in type(self).implemented():
            return outcome_of(
                call_execute_for_feature(self, ctx, feature), method=f"{name}.execute_for_feature()"
            )
        rows = self.execute(
            ctx.store,
            from_snapshot_version=ctx.from_snapshot_version,
            to_snapshot_version=ctx.to_snapshot_version,
            dry_run=ctx.dry_run,
        )
        return outcome_of(rows, method=f"{name}.execute()")


class DataVersionReconciliation(BaseOperation):
    """Carry stored rows over to the new feature versions without recomputing them.

    For each affected feature with upstream features, upstream first: the rows stored at the old feature
    version keep every user column, get their provenance recomputed under the new graph from the upstream
    data versions (joined on the feature's id columns), are stamped with the new versions and appended in
    batches. Samples already present at the new version (recomputed by the pipeline, or written by an
    interrupted run of this step) are left alone, which makes the step resumable without duplicates. A root
    feature whose version changed cannot be reconciled; it is reported as ``recompute_required``.

    It splits into units of work (:meth:`plan_units`): the buckets of each feature's rows at the old version,
    which workers carry over independently, under the step's one write id.
    """

    default_id: ClassVar[str | None] = "reconcile"
    features_verb: ClassVar[str] = "reconcile"

    def _nothing_to_carry(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome | None:
        """The step's outcome when there is nothing to carry over (None: there may be)."""
        if ctx.from_graph is None:
            raise OperationError(f"{self.op_id}: reconciliation needs a migration with a from-snapshot")
        new_graph, old_graph = ctx.to_graph, ctx.from_graph
        spec = new_graph.spec(feature)
        if feature not in old_graph:
            return StepOutcome(0, note=f"{feature} is new in this snapshot; nothing stored to reconcile")
        old_version, new_version = old_graph.feature_version(feature), new_graph.feature_version(feature)
        if old_version == new_version:
            return StepOutcome(0, note=f"{feature} is unchanged ({new_version})")
        if not spec.deps:
            return StepOutcome(
                0,
                status=StepStatus.RECOMPUTE_REQUIRED,
                note=(
                    f"root feature {feature} changed ({old_version} -> {new_version}); its provenance comes "
                    "from its data, so reconciliation cannot carry it over: recompute this feature"
                ),
            )
        if not ctx.store.has_metadata(feature):
            return StepOutcome(0, note=f"{feature} has no stored metadata; nothing to reconcile")
        return None

    def run(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome:
        done = self._nothing_to_carry(ctx, feature)
        if done is not None:
            return done
        if ctx.dry_run and reconcile.pending_upstreams(ctx, feature):
            rows, note = reconcile.estimate_after_upstreams(ctx, feature)
            return StepOutcome(rows, note=note)
        result = self._carry(ctx, feature)
        return StepOutcome(result.rows, note=reconcile.missing_note(feature, result.missing))

    def _carry(
        self,
        ctx: OperationContext,
        feature: FeatureKey,
        partitioning: Partitioning | None = None,
        buckets: Collection[int] | None = None,
    ) -> reconcile.CarryOverResult:
        """Carry ``feature``'s rows over (all buckets, or ``buckets`` of a fixed ``partitioning``: one unit).

        Bounded memory at any table size: samples are processed in buckets sized by ``batch_rows``, each
        bucket appended in one commit (see :mod:`metaxy_core.migrations.reconcile`).
        """
        assert ctx.from_graph is not None
        spec = ctx.to_graph.spec(feature)
        write = None if ctx.dry_run else ctx.store.begin_write(spec.key)
        meter = ctx.progress(feature)  # rows at the old version gone through, after every bucket
        result = reconcile.carry_over(
            ctx.store,
            spec,
            old_graph=ctx.from_graph,
            new_graph=ctx.to_graph,
            write_id=write.write_id if write is not None else None,
            snapshot_version=ctx.to_snapshot_version,
            dry_run=ctx.dry_run,
            partition_rows=ctx.batch_rows,
            on_commit=write.count if write is not None else None,
            on_progress=meter.update,
            partitioning=partitioning,
            only_buckets=buckets,
        )
        meter.finish()
        return result

    def plan_units(self, ctx: OperationContext, feature: FeatureKey) -> Partitioning | None:
        if ctx.dry_run or self._nothing_to_carry(ctx, feature) is not None:
            return None
        assert ctx.from_graph is not None
        spec = ctx.to_graph.spec(feature)
        return reconcile.carry_plan(ctx.store, spec, old_graph=ctx.from_graph, partition_rows=ctx.batch_rows)

    def run_unit(
        self, ctx: OperationContext, feature: FeatureKey, partitioning: Partitioning, buckets: Collection[int]
    ) -> UnitOutcome:
        assert not ctx.dry_run
        result = self._carry(ctx, feature, partitioning, buckets)
        return UnitOutcome(result.rows, commits=result.commits, skipped=result.missing)

    def units_note(self, feature: FeatureKey, skipped: int) -> str:
        return reconcile.missing_note(feature, skipped)


class DeltaMaintenance(BaseOperation):
    """Delta maintenance as a migration step: compact (optionally Z-order), checkpoint, optionally vacuum.

    Covers ``feature_key``, or every feature of the migration's graph that has a table. Rows are unchanged
    (compaction rewrites files, not data), so the step reports 0 rows and says what it did in its note.
    In a dry run nothing is changed; the note says how many files there are (and what vacuum would delete).

    Example (YAML)::

        ops:
          - type: metaxy_core.migrations.ops.DeltaMaintenance
            feature_key: video/embeddings   # optional
            vacuum_hours: 168               # optional: also vacuum with this retention
    """

    default_id: ClassVar[str | None] = "maintenance"
    feature_key: FeatureKey | None = Field(None, description="Maintain only this feature's table.")
    z_order: bool = Field(False, description="Cluster files on the feature's id columns while compacting.")
    vacuum_hours: float | None = Field(
        None, ge=0, description="Also vacuum unreferenced files older than this many hours (None: no vacuum)."
    )

    @field_validator("feature_key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> Any:
        return FeatureKey(value) if value is not None and not isinstance(value, FeatureKey) else value

    def features_for(self, ctx: OperationContext) -> list[FeatureKey]:
        if self.feature_key is not None:
            return [self.feature_key]
        if self.features is not None:
            return super().features_for(ctx)
        return ctx.to_graph.topological_order()

    def run(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome:
        from metaxy_core.store import maintenance

        store = ctx.store
        if not store.has_metadata(feature):
            return StepOutcome(0, note=f"{feature} has no table; nothing to maintain")
        if ctx.dry_run:
            [plan] = maintenance.optimize(store, feature, graph=ctx.to_graph, dry_run=True)
            note = f"{plan.files_before} data file(s) would be compacted"
            if self.vacuum_hours is not None:
                [vac] = maintenance.vacuum(
                    store, feature, retention_hours=self.vacuum_hours, dry_run=True, graph=ctx.to_graph
                )
                note += f"; vacuum would delete {vac.files_removed} file(s)"
            return StepOutcome(0, note=note)
        reports = maintenance.maintain(
            store, feature, vacuum_hours=self.vacuum_hours, z_order=self.z_order, graph=ctx.to_graph
        )
        by_action = {r.action: r for r in reports}
        opt = by_action["optimize"]
        note = (
            f"compacted {opt.files_before} -> {opt.files_after} file(s); checkpoint at v{opt.version_after}"
        )
        if "vacuum" in by_action:
            note += f"; vacuumed {by_action['vacuum'].files_removed} file(s)"
        return StepOutcome(0, note=note)


# ---------------------------------------------------------------------- registry
_ALIASES = {
    # Metaxy 0.1.x import paths, accepted unchanged.
    "metaxy.migrations.ops.DataVersionReconciliation": "metaxy_core.migrations.ops.DataVersionReconciliation",
    "metaxy.migrations.ops.MetadataBackfill": "metaxy_core.migrations.ops.MetadataBackfill",
    "DataVersionReconciliation": "metaxy_core.migrations.ops.DataVersionReconciliation",
}


def resolve_operation_class(type_path: str) -> type[BaseOperation]:
    """Import ``type_path`` and check it is a concrete :class:`BaseOperation` subclass.

    Raises:
        OperationError: with the path and the fix (never executes anything but the module import).
    """
    path = _ALIASES.get(type_path, type_path)
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise OperationError(
            f"operation type {type_path!r} is not an import path; write it as 'package.module.ClassName'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OperationError(
            f"operation type {type_path!r}: module {module_name!r} cannot be imported ({exc}); check the "
            "spelling and that the package is installed or next to metaxy.toml"
        ) from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise OperationError(
            f"operation type {type_path!r}: {module_name} has no attribute {attr!r}; check the class name"
        )
    if not (isinstance(obj, type) and issubclass(obj, BaseOperation)):
        raise OperationError(
            f"operation type {type_path!r} is not a BaseOperation subclass; an operation type must name a "
            "class deriving from metaxy_core.migrations.BaseOperation"
        )
    if getattr(obj, "__abstractmethods__", None):
        raise OperationError(
            f"operation type {type_path!r} is abstract (missing "
            f"{', '.join(sorted(obj.__abstractmethods__))}); name a concrete subclass"
        )
    problem = obj.implementation_error()
    if problem:
        raise OperationError(f"operation type {type_path!r}: {problem}")
    return obj


def build_operation(spec: BaseOperation | dict[str, Any]) -> BaseOperation:
    """An operation instance from an instance or a ``{"type": ..., **fields}`` dict (validated)."""
    if isinstance(spec, BaseOperation):
        problem = type(spec).implementation_error()
        if problem:
            raise OperationError(f"operation {spec.op_id}: {problem}")
        return spec
    if not isinstance(spec, dict):
        raise OperationError(f"an operation must be a mapping with a `type`, got {type(spec).__name__}")
    if "type" not in spec:
        raise OperationError(
            f"operation {reprlib.repr(spec)} has no `type`; give the import path of its class"
        )
    if not isinstance(spec["type"], str):
        raise OperationError(
            f"operation {reprlib.repr(spec)}: `type` must be an import path string such as "
            "'metaxy_core.migrations.ops.DataVersionReconciliation'"
        )
    cls = resolve_operation_class(spec["type"])
    data = dict(spec)
    declared = cls.model_fields["type"].annotation
    data["type"] = spec["type"] if _accepts_literal(declared) else cls.import_path()
    try:
        return cls.model_validate(data)
    except ValidationError as exc:  # redact: a validator may quote a ${VAR} value
        raise OperationError(
            redact(f"operation {spec.get('id') or spec['type']}: {format_validation_error(exc)}")
        ) from None


def _accepts_literal(annotation: Any) -> bool:
    return "Literal" in repr(annotation)


_ENV_REFERENCE = re.compile(r"\$\{([^}]+)\}")


def substitute_env(data: Any, *, where: str) -> Any:
    """``data`` (an operation's fields) with every ``${VAR}`` in its string values (top level, and inside
    lists) replaced by the environment variable's value, registered as a secret (:func:`register_secret`).

    ``type`` is never substituted. Nothing is read unless the file writes ``${VAR}``.

    Raises:
        OperationError: a referenced variable is not set (naming the field and the variable).
    """
    if not isinstance(data, dict):
        return data

    def sub(field: str, value: Any) -> Any:
        if isinstance(value, list):
            return [sub(field, v) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            found = os.environ.get(name)
            if found is None:
                raise OperationError(
                    f"{where}: `{field}` references ${{{name}}}, but the environment variable {name} is not "
                    "set; set it where metaxy runs (its value is treated as a secret)"
                )
            register_secret(found)
            return found

        return _ENV_REFERENCE.sub(one, value)

    return {k: (v if k == "type" else sub(str(k), v)) for k, v in data.items()}


def _label(data: Any, cls: type) -> str:
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return data["id"]
    return cls.__qualname__


def _overrides(cls: type, name: str) -> bool:
    """``cls`` implements ``name``: it defines it, or inherits it from a class other than the bases whose
    version only says it is not implemented (or dispatches to another entry point)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass not in (BaseOperation, MetadataBackfill)
    return False


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
