"""Declarative specs: what a feature is made of and what it depends on.

Specs are plain pydantic data so that a graph can be serialised into a snapshot and rebuilt later without
importing the user's code (migrations need the graph as it was when old rows were written).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from metaxy_core.graph.keys import FeatureKey, FieldKey


def _coerce_feature_ref(value: Any) -> Any:
    """Accept a Feature class wherever a key is expected (``FeatureDep(feature=VideoRaw)``)."""
    spec = getattr(value, "spec", None)
    if isinstance(value, type) and isinstance(spec, FeatureSpec):
        return spec.key
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class FieldDep(_Spec):
    """A field's dependency on fields of an upstream feature.

    ``fields=None`` means every field of that feature, which is also what a field with no explicit
    ``deps`` gets for every upstream feature.
    """

    feature: FeatureKey
    fields: tuple[FieldKey, ...] | None = None

    @field_validator("feature", mode="before")
    @classmethod
    def _feature(cls, value: Any) -> Any:
        return _coerce_feature_ref(value)

    @field_validator("fields", mode="before")
    @classmethod
    def _fields(cls, value: Any) -> Any:
        if isinstance(value, (str, FieldKey)):
            return (value,)
        return value


class FieldSpec(_Spec):
    """A field of a feature (``frames``, ``audio``, ``embedding``) and the code version producing it.

    Bump ``code_version`` when the code that computes the field changes its output; every row's provenance
    for this field (and for downstream fields) changes with it.
    """

    key: FieldKey
    code_version: str = "1"
    deps: tuple[FieldDep, ...] | None = Field(
        default=None,
        description=(
            "Upstream fields this field is computed from; None = all fields of all upstream features."
        ),
    )

    @field_validator("code_version", mode="before")
    @classmethod
    def _code_version(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value


class FeatureDep(_Spec):
    """A feature-level dependency on an upstream feature (given as its class or its key)."""

    feature: FeatureKey

    @field_validator("feature", mode="before")
    @classmethod
    def _feature(cls, value: Any) -> Any:
        return _coerce_feature_ref(value)


class FeatureSpec(_Spec):
    """Definition of a feature: key, sample id columns, fields and upstream features."""

    key: FeatureKey
    id_columns: tuple[str, ...] = ("sample_uid",)
    fields: tuple[FieldSpec, ...] = (FieldSpec(key=FieldKey("default")),)
    deps: tuple[FeatureDep, ...] = ()

    @field_validator("deps", mode="before")
    @classmethod
    def _deps(cls, value: Any) -> Any:
        if value is None:
            return ()
        return tuple(FeatureDep(feature=v) if not isinstance(v, (FeatureDep, dict)) else v for v in value)

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        where = f"feature {self.key}"
        if not self.id_columns:
            raise ValueError(f"{where}: id_columns may not be empty (e.g. ['sample_uid'])")
        if len(set(self.id_columns)) != len(self.id_columns):
            raise ValueError(f"{where}: id_columns {list(self.id_columns)} contain a duplicate")
        bad = [c for c in self.id_columns if not c or c.startswith("metaxy_")]
        if bad:
            raise ValueError(f"{where}: id column(s) {bad} are invalid; the 'metaxy_' prefix is reserved")
        if not self.fields:
            raise ValueError(f"{where}: declare at least one field")
        names = [f.key for f in self.fields]
        dupes = sorted({str(n) for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{where}: field(s) {dupes} declared twice")
        dep_keys = [d.feature for d in self.deps]
        if len(set(dep_keys)) != len(dep_keys):
            raise ValueError(f"{where}: an upstream feature is listed twice in deps")
        if self.key in dep_keys:
            raise ValueError(f"{where} depends on itself")
        for field in self.fields:
            for fdep in field.deps or ():
                if fdep.feature not in dep_keys:
                    raise ValueError(
                        f"{where}, field {field.key}: depends on {fdep.feature}, which is not in the "
                        f"feature's deps; add FeatureDep(feature={str(fdep.feature)!r})"
                    )
        return self

    def field(self, key: str | FieldKey) -> FieldSpec:
        key = FieldKey(key)
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(f"feature {self.key} has no field {key}")

    @property
    def field_names(self) -> list[str]:
        return [f.key.to_table_name() for f in self.fields]
