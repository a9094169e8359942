"""The feature graph: every declared feature, its dependencies and its versions.

A graph is validated as features are added, so a mistake (duplicate key, unknown upstream, a field depending
on a field that does not exist) fails at the line that declares it, not later in a migration.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from metaxy_core.errors import (
    CycleError,
    DuplicateFeatureError,
    FeatureNotFoundError,
    GraphError,
    UnknownDependencyError,
)
from metaxy_core.graph import versions as _v
from metaxy_core.graph.keys import CoercibleToFeatureKey, FeatureKey, FieldKey
from metaxy_core.graph.spec import FeatureDep, FeatureSpec

SNAPSHOT_FORMAT = 1


class FeatureGraph:
    """A set of feature specs with dependency lookups and stable versions.

    Example:
        >>> graph = FeatureGraph()
        >>> with graph.use():
        ...     class Raw(Feature, spec=FeatureSpec(key="raw", fields=[FieldSpec(key="x")])): ...
        >>> graph.snapshot_version
    """

    def __init__(self) -> None:
        self._specs: dict[FeatureKey, FeatureSpec] = {}
        self._classes: dict[FeatureKey, type] = {}

    # ----------------------------------------------------------------- activation
    @classmethod
    def get_active(cls) -> FeatureGraph:
        """The graph features register into: the innermost ``with graph.use():`` or the global default."""
        return _ACTIVE.get()

    @contextmanager
    def use(self) -> Iterator[FeatureGraph]:
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    # ------------------------------------------------------------------ building
    def add(self, spec: FeatureSpec, feature_class: type | None = None) -> None:
        """Register ``spec``; its upstream features must already be in the graph."""
        if spec.key in self._specs:
            previous = self._classes.get(spec.key)
            where = f" (first declared by {previous.__module__}.{previous.__qualname__})" if previous else ""
            raise DuplicateFeatureError(
                f"feature {spec.key} is declared twice{where}; give each feature a unique key"
            )
        for dep in spec.deps:
            if dep.feature not in self._specs:
                raise UnknownDependencyError(
                    f"feature {spec.key} depends on {dep.feature}, which is not in the graph; declare "
                    f"{dep.feature} first (or import the module that declares it)"
                )
            upstream = self._specs[dep.feature]
            if set(spec.id_columns) != set(upstream.id_columns):
                raise GraphError(
                    f"feature {spec.key} joins its upstream {dep.feature} on id columns "
                    f"{list(spec.id_columns)}, but {dep.feature} has id columns "
                    f"{list(upstream.id_columns)}; give both the same id columns"
                )
        for field in spec.fields:
            for fdep in field.deps or ():
                upstream = self._specs[fdep.feature]
                known = {f.key for f in upstream.fields}
                for name in fdep.fields or ():
                    if name not in known:
                        raise UnknownDependencyError(
                            f"feature {spec.key}, field {field.key}: upstream {fdep.feature} has no field "
                            f"{name} (it has {sorted(str(k) for k in known)})"
                        )
        self._specs[spec.key] = spec
        if feature_class is not None:
            self._classes[spec.key] = feature_class
        self._invalidate()

    def remove(self, key: CoercibleToFeatureKey) -> None:
        key = FeatureKey(key)
        dependants = [k for k, s in self._specs.items() if any(d.feature == key for d in s.deps)]
        if dependants:
            raise GraphError(f"cannot remove {key}: {', '.join(map(str, dependants))} depend on it")
        self._specs.pop(key, None)
        self._classes.pop(key, None)
        self._invalidate()

    def _invalidate(self) -> None:
        for name in ("_field_versions", "_feature_versions", "snapshot_version", "_order"):
            self.__dict__.pop(name, None)

    # ------------------------------------------------------------------- lookups
    def __contains__(self, key: object) -> bool:
        try:
            return resolve_key(key) in self._specs  # type: ignore[arg-type]
        except Exception:
            return False

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def keys(self) -> list[FeatureKey]:
        return list(self._specs)

    def spec(self, key: CoercibleToFeatureKey | type) -> FeatureSpec:
        key = resolve_key(key)
        try:
            return self._specs[key]
        except KeyError:
            known = ", ".join(sorted(map(str, self._specs))) or "none"
            raise FeatureNotFoundError(
                f"feature {key} is not in the feature graph (known features: {known}); check the key or "
                "add the module declaring it to `entrypoints` in metaxy.toml"
            ) from None

    def feature_class(self, key: CoercibleToFeatureKey) -> type | None:
        return self._classes.get(FeatureKey(key))

    def upstream(self, key: CoercibleToFeatureKey | type) -> list[FeatureKey]:
        return [d.feature for d in self.spec(key).deps]

    def downstream(self, keys: Iterable[CoercibleToFeatureKey | type]) -> list[FeatureKey]:
        """Every feature that transitively depends on ``keys`` (excluding them), in topological order."""
        seeds = {resolve_key(k) for k in keys}
        reached: set[FeatureKey] = set()
        for key in self.topological_order():
            if key in seeds:
                continue
            if any(d.feature in seeds or d.feature in reached for d in self._specs[key].deps):
                reached.add(key)
        return [k for k in self.topological_order() if k in reached]

    def topological_order(self, keys: Iterable[FeatureKey] | None = None) -> list[FeatureKey]:
        """Upstream before downstream, ties broken by key so the order is deterministic."""
        order = self._order
        if keys is None:
            return list(order)
        wanted = set(keys)
        return [k for k in order if k in wanted]

    @cached_property
    def _order(self) -> list[FeatureKey]:
        indegree = {k: len(s.deps) for k, s in self._specs.items()}
        children: dict[FeatureKey, list[FeatureKey]] = {k: [] for k in self._specs}
        for k, s in self._specs.items():
            for d in s.deps:
                if d.feature not in self._specs:
                    raise UnknownDependencyError(
                        f"feature {k} depends on {d.feature}, which is not in the graph"
                    )
                children[d.feature].append(k)
        ready = sorted(k for k, n in indegree.items() if n == 0)
        order: list[FeatureKey] = []
        while ready:
            key = ready.pop(0)
            order.append(key)
            for child in children[key]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
            ready.sort()
        if len(order) != len(self._specs):
            stuck = sorted(str(k) for k in self._specs if k not in order)
            raise CycleError(f"feature dependencies form a cycle among: {', '.join(stuck)}")
        return order

    def layers(self) -> list[list[FeatureKey]]:
        """Topological layers: features in one layer do not depend on each other."""
        depth: dict[FeatureKey, int] = {}
        for key in self.topological_order():
            depth[key] = 1 + max((depth[d.feature] for d in self._specs[key].deps), default=-1)
        out: list[list[FeatureKey]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for key, d in depth.items():
            out[d].append(key)
        return out

    def resolved_field_deps(
        self, key: CoercibleToFeatureKey, field: str | FieldKey
    ) -> list[tuple[FeatureKey, FieldKey]]:
        """The (upstream feature, upstream field) pairs a field is computed from, sorted."""
        spec = self.spec(key)
        fspec = spec.field(field)
        pairs: set[tuple[FeatureKey, FieldKey]] = set()
        if fspec.deps is None:
            for dep in spec.deps:
                pairs.update((dep.feature, f.key) for f in self._specs[dep.feature].fields)
        else:
            for fdep in fspec.deps:
                upstream = self._specs[fdep.feature]
                names = fdep.fields if fdep.fields is not None else tuple(f.key for f in upstream.fields)
                pairs.update((fdep.feature, n) for n in names)
        return sorted(pairs)

    # ------------------------------------------------------------------ versions
    @cached_property
    def _field_versions(self) -> dict[FeatureKey, dict[FieldKey, str]]:
        out: dict[FeatureKey, dict[FieldKey, str]] = {}
        for key in self.topological_order():
            spec = self._specs[key]
            out[key] = {}
            for field in spec.fields:
                upstream = [f"{uk}:{uf}:{out[uk][uf]}" for uk, uf in self.resolved_field_deps(key, field.key)]
                out[key][field.key] = _v.digest(
                    _v.field_version_payload(str(key), str(field.key), field.code_version, upstream)
                )
        return out

    @cached_property
    def _feature_versions(self) -> dict[FeatureKey, str]:
        return {
            key: _v.digest(_v.feature_version_payload(str(key), {str(f): v for f, v in fields.items()}))
            for key, fields in self._field_versions.items()
        }

    def field_version(self, key: CoercibleToFeatureKey | type, field: str | FieldKey) -> str:
        spec = self.spec(key)
        return self._field_versions[spec.key][spec.field(field).key]

    def field_versions(self, key: CoercibleToFeatureKey | type) -> dict[str, str]:
        """Field versions keyed by the field's column name inside the provenance struct."""
        spec = self.spec(key)
        return {f.to_table_name(): v for f, v in self._field_versions[spec.key].items()}

    def feature_version(self, key: CoercibleToFeatureKey | type) -> str:
        return self._feature_versions[self.spec(key).key]

    @cached_property
    def snapshot_version(self) -> str:
        """Hash of the whole graph: every feature key and its feature version."""
        return _v.digest(_v.snapshot_version_payload({str(k): v for k, v in self._feature_versions.items()}))

    # ------------------------------------------------------------------ snapshots
    def to_snapshot(self) -> dict[str, Any]:
        """Plain, JSON-serialisable description of the graph, enough to rebuild it without user code."""
        return {
            "format": SNAPSHOT_FORMAT,
            "snapshot_version": self.snapshot_version,
            "features": [
                {
                    **self._specs[k].model_dump(mode="json"),
                    "feature_version": self.feature_version(k),
                    "field_versions": self.field_versions(k),
                    "class_path": _class_path(self._classes.get(k)),
                }
                for k in self.topological_order()
            ],
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> FeatureGraph:
        """Rebuild a graph from :meth:`to_snapshot` output; verifies the versions still hash the same."""
        graph = cls()
        for item in data.get("features", []):
            payload = {
                k: v for k, v in item.items() if k not in ("feature_version", "field_versions", "class_path")
            }
            graph.add(FeatureSpec.model_validate(payload))
        expected = data.get("snapshot_version")
        if expected is not None and graph.snapshot_version != expected:
            raise GraphError(
                f"snapshot {expected} rebuilt to version {graph.snapshot_version}; the stored snapshot is "
                "corrupt or was written by an incompatible metaxy version"
            )
        return graph

    # ------------------------------------------------------- Metaxy's accessors
    # The names Metaxy's documented migrations use, so code written for Metaxy runs unchanged.
    @property
    def features_by_key(self) -> dict[FeatureKey, type | FeatureSpec]:
        """Every feature by key: its class when declared in code, else its spec (a graph rebuilt from a
        snapshot has no classes). Either is accepted wherever the store takes a feature."""
        return {k: self._classes.get(k) or s for k, s in self._specs.items()}

    @property
    def all_specs_by_key(self) -> dict[FeatureKey, FeatureSpec]:
        return dict(self._specs)

    def get_feature_by_key(self, key: CoercibleToFeatureKey | type) -> type | FeatureSpec:
        """The feature's class (its spec when the graph has no class for it)."""
        spec = self.spec(key)
        return self._classes.get(spec.key) or spec

    def get_feature_plan(self, key: CoercibleToFeatureKey | type) -> FeaturePlan:
        """The feature's spec with its direct upstream features' specs (Metaxy's ``FeaturePlan``)."""
        spec = self.spec(key)
        deps = [self._specs[d.feature] for d in spec.deps]
        return FeaturePlan(feature=spec, deps=deps or None, feature_deps=list(spec.deps) or None)

    def get_downstream_features(self, sources: Iterable[CoercibleToFeatureKey | type]) -> list[FeatureKey]:
        return self.downstream(sources)

    def topological_sort_features(
        self, keys: Iterable[CoercibleToFeatureKey | type] | None = None
    ) -> list[FeatureKey]:
        return self.topological_order(None if keys is None else [resolve_key(k) for k in keys])

    def list_features(self) -> list[FeatureKey]:
        return self.topological_order()

    def get_feature_version(self, key: CoercibleToFeatureKey | type) -> str:
        return self.feature_version(key)

    def get_feature_version_by_field(self, key: CoercibleToFeatureKey | type) -> dict[str, str]:
        return self.field_versions(key)

    def __repr__(self) -> str:
        return f"FeatureGraph({len(self)} features, snapshot {self.snapshot_version})"


@dataclass(frozen=True)
class FeaturePlan:
    """A feature and its direct upstream features, as Metaxy's ``graph.get_feature_plan(key)`` returns it.

    Attributes:
        feature: the feature's spec.
        deps: the upstream features' specs, or None for a root feature.
        feature_deps: the feature's dependency declarations, or None for a root feature.
    """

    feature: FeatureSpec
    deps: list[FeatureSpec] | None
    feature_deps: list[FeatureDep] | None = None

    @property
    def parent_features_by_key(self) -> dict[FeatureKey, FeatureSpec]:
        return {spec.key: spec for spec in self.deps or []}


def _class_path(cls: type | None) -> str | None:
    return f"{cls.__module__}.{cls.__qualname__}" if cls is not None else None


def resolve_key(value: CoercibleToFeatureKey | type) -> FeatureKey:
    """A FeatureKey from a key, a string/list, a Feature class or a FeatureSpec."""
    if isinstance(value, FeatureSpec):
        return value.key
    spec = getattr(value, "spec", None)
    if isinstance(value, type) and isinstance(spec, FeatureSpec):
        return spec.key
    return FeatureKey(value)  # type: ignore[arg-type]


#: the process-wide default graph, shared by every context that has not activated another one
_DEFAULT_GRAPH = FeatureGraph()
_ACTIVE: contextvars.ContextVar[FeatureGraph] = contextvars.ContextVar(
    "metaxy_active_graph", default=_DEFAULT_GRAPH
)
