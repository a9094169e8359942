"""Per-row provenance: the system columns, their hashes, the expected provenance and the stamping of rows.

Row hash algorithm (pinned by tests/core/test_versions.py, which recomputes it with the reference ``xxhash``
package): XXH3-64 (seed 0) over the UTF-8 bytes of the ``|``-joined inputs, written as the unsigned decimal
string of the 64-bit digest.

* downstream field provenance = H(field_version | upstream data versions of the fields it depends on, in
  sorted (feature, field) order);
* ``metaxy_provenance`` = H(field provenances in sorted field order);
* ``metaxy_data_version_by_field`` / ``metaxy_data_version`` default to the provenance; a writer may supply
  its own (a content hash) to stop propagation when a recomputation produced identical data.

Everything here works on frames the caller provides (no store reads), so writes, ``resolve_update`` and
reconciliation, over whole tables or one bucket of them, share one definition of each column.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import reduce

import polars as pl
import polars_hash  # noqa: F401  (registers the .nchash namespace)

from metaxy_core._process import now
from metaxy_core.errors import MetadataSchemaError
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.graph.spec import FeatureSpec

PROVENANCE_BY_FIELD = "metaxy_provenance_by_field"
PROVENANCE = "metaxy_provenance"
DATA_VERSION_BY_FIELD = "metaxy_data_version_by_field"
DATA_VERSION = "metaxy_data_version"
FEATURE_VERSION = "metaxy_feature_version"
SNAPSHOT_VERSION = "metaxy_snapshot_version"
CREATED_AT = "metaxy_created_at"
WRITE_ID = "metaxy_write_id"
#: the order of a row among the rows of its table: ``2·V`` for a row committed at Delta version ``V``,
#: ``2·R+1`` for a row derived from a read of the table at version ``R`` (see :mod:`metaxy_core.store.order`)
COMMIT_ORDER = "metaxy_commit_order"

SYSTEM_COLUMNS = (
    PROVENANCE_BY_FIELD,
    PROVENANCE,
    DATA_VERSION_BY_FIELD,
    DATA_VERSION,
    FEATURE_VERSION,
    SNAPSHOT_VERSION,
    CREATED_AT,
    WRITE_ID,
    COMMIT_ORDER,
)

#: the type of ``metaxy_created_at``
TIMESTAMP = pl.Datetime("us", "UTC")

SEPARATOR = "|"


#: commitInfo key: every row of the commit has its default data version (equal to its provenance)
DEFAULT_DATA_VERSIONS_FACT = "metaxy.default_data_versions"
#: commitInfo keys of a commit of derived rows (bulk writer): their commit order and how many rows it added
COMMIT_ORDER_FACT = "metaxy.commit_order"
ROWS_FACT = "metaxy.rows"


def data_version_facts(frames: Sequence[pl.DataFrame]) -> dict[str, str]:
    """What a commit of ``frames`` records about its rows' data versions, for readers to rely on.

    Reconciliation reads the old rows' provenance and data-version columns (two long hash strings per row)
    only to learn that the data versions are the defaults; a commit whose rows all have them says so
    (``{DEFAULT_DATA_VERSIONS_FACT: "true"}``, see :func:`metaxy_core.store.layout.default_data_versions`).
    Nothing is recorded otherwise: absence means "not known", and readers check the rows.
    """
    for frame in frames:
        if DATA_VERSION not in frame.columns or PROVENANCE not in frame.columns:
            return {}
        dv = frame.get_column(DATA_VERSION)
        if dv.has_nulls() or not (dv == frame.get_column(PROVENANCE)).all():
            return {}
    return {DEFAULT_DATA_VERSIONS_FACT: "true"}


def row_hash(parts: Sequence[pl.Expr]) -> pl.Expr:
    """XXH3-64 over the ``|``-joined string parts, as a decimal string."""
    joined = pl.concat_str(list(parts), separator=SEPARATOR)
    return joined.nchash.xxh3_64().cast(pl.String)  # type: ignore[attr-defined]


def combined_provenance(struct_col: str, fields: Sequence[str]) -> pl.Expr:
    """``metaxy_provenance`` from a provenance struct column."""
    return row_hash([pl.col(struct_col).struct.field(f) for f in sorted(fields)])


def field_provenance(field_version: str, upstream: Sequence[pl.Expr]) -> pl.Expr:
    """A downstream field's provenance: the hash of its field version and its upstream data versions."""
    return row_hash([pl.lit(field_version), *upstream])


def fill_data_versions(data_versions: pl.Expr, provenance: pl.Expr, fields: Sequence[str]) -> pl.Expr:
    """A data-version struct with exactly ``fields``: a field the writer left null follows the provenance."""
    return pl.struct(
        [pl.coalesce(data_versions.struct.field(f), provenance.struct.field(f)).alias(f) for f in fields]
    )


def check_rows(spec: FeatureSpec, schema: Mapping[str, pl.DataType]) -> None:
    """Refuse rows of ``spec`` that cannot be stored, naming what is wrong and the fix.

    Rows need the feature's id columns. A root feature's rows must bring ``metaxy_provenance_by_field``
    (its provenance comes from its data); a downstream feature's may omit it (it is computed from upstream).
    Provenance and data-version structs must hold exactly one string per field.

    Raises:
        MetadataSchemaError: with the feature, the columns at fault and the expected shape.
    """
    ids = list(spec.id_columns)
    missing = [c for c in ids if c not in schema]
    if missing:
        raise MetadataSchemaError(
            f"rows for feature {spec.key} lack id column(s) {missing}; every row needs {ids}"
        )
    if PROVENANCE_BY_FIELD not in schema:
        if not spec.deps:
            raise MetadataSchemaError(
                f"rows for root feature {spec.key} must bring {PROVENANCE_BY_FIELD}: a struct with one "
                f"string per field ({', '.join(spec.field_names)}), e.g. content hashes of the source files"
            )
        return
    _check_struct(spec, schema[PROVENANCE_BY_FIELD], PROVENANCE_BY_FIELD)
    if DATA_VERSION_BY_FIELD in schema:
        _check_struct(spec, schema[DATA_VERSION_BY_FIELD], DATA_VERSION_BY_FIELD)


def _check_struct(spec: FeatureSpec, dtype: pl.DataType, column: str) -> None:
    fields = spec.field_names
    if not isinstance(dtype, pl.Struct):
        raise MetadataSchemaError(
            f"{column} for feature {spec.key} must be a struct with one string per field ({fields}), "
            f"got {dtype}"
        )
    got = {f.name: f.dtype for f in dtype.fields}
    if set(got) != set(fields) or any(d != pl.String for d in got.values()):
        raise MetadataSchemaError(
            f"{column} for feature {spec.key} must be a struct with exactly the string fields {fields}; "
            f"got {{{', '.join(f'{k}: {v}' for k, v in got.items())}}}"
        )


def provenance_from_upstream(
    spec: FeatureSpec, graph: FeatureGraph, upstream: Mapping[FeatureKey, pl.LazyFrame]
) -> pl.LazyFrame:
    """Expected provenance of every sample present in all of ``upstream`` (the dependencies' current rows).

    ``upstream`` maps each dependency to its newest rows (id columns and ``metaxy_data_version_by_field``):
    whole tables, or one bucket of them. Upstream rows are joined on the feature's id columns and each field
    hashes the data versions of the upstream fields it depends on (field-level lineage).
    """
    ids = list(spec.id_columns)
    frames = [
        upstream[dep.feature].select([*ids, pl.col(DATA_VERSION_BY_FIELD).alias(f"__up{i}")])
        for i, dep in enumerate(spec.deps)
    ]
    joined = reduce(lambda a, b: a.join(b, on=ids, how="inner", nulls_equal=True), frames)
    position = {dep.feature: i for i, dep in enumerate(spec.deps)}
    field_exprs = []
    for field in spec.fields:
        parts = [
            pl.col(f"__up{position[uk]}").struct.field(uf.to_table_name())
            for uk, uf in graph.resolved_field_deps(spec.key, field.key)
        ]
        field_exprs.append(
            field_provenance(graph.field_version(spec.key, field.key), parts).alias(field.key.to_table_name())
        )
    return joined.select([*ids, pl.struct(field_exprs).alias(PROVENANCE_BY_FIELD)]).with_columns(
        combined_provenance(PROVENANCE_BY_FIELD, spec.field_names).alias(PROVENANCE)
    )


def derive_versions(lf: pl.LazyFrame, spec: FeatureSpec) -> pl.LazyFrame:
    """Complete the provenance and data-version columns of rows that bring ``metaxy_provenance_by_field``.

    The provenance struct is narrowed to the feature's fields (in their order) and hashed; data versions the
    writer did not give default to the provenance, field by field, and the combined one to their hash.
    """
    schema = lf.collect_schema()
    fields = spec.field_names
    struct = pl.col(PROVENANCE_BY_FIELD)
    lf = lf.with_columns(pl.struct([struct.struct.field(f) for f in fields]).alias(PROVENANCE_BY_FIELD))
    lf = lf.with_columns(combined_provenance(PROVENANCE_BY_FIELD, fields).alias(PROVENANCE))
    if DATA_VERSION_BY_FIELD in schema:
        lf = lf.with_columns(
            fill_data_versions(pl.col(DATA_VERSION_BY_FIELD), struct, fields).alias(DATA_VERSION_BY_FIELD)
        )
    else:
        lf = lf.with_columns(pl.col(PROVENANCE_BY_FIELD).alias(DATA_VERSION_BY_FIELD))
    derived = combined_provenance(DATA_VERSION_BY_FIELD, fields)
    return lf.with_columns(
        (pl.coalesce(pl.col(DATA_VERSION), derived) if DATA_VERSION in schema else derived).alias(
            DATA_VERSION
        )
    )


def stamp_versions(
    lf: pl.LazyFrame,
    spec: FeatureSpec,
    graph: FeatureGraph,
    *,
    write_id: str | None = None,
    snapshot_version: str | None = None,
    created_at: datetime | None = None,
    commit_order: int | None = None,
) -> pl.LazyFrame:
    """Stamp rows whose provenance columns are complete: versions, time and write id, in canonical order.

    Every stored row goes through here (``write_metadata`` and reconciliation alike), so the stamps and the
    column order (ids, user columns, system columns) are defined once. A missing ``write_id`` gets a fresh
    one, so an unattributed write can still be told apart from every other. ``commit_order`` is given for
    rows derived from a read of the table (``2·R+1``); otherwise the column is left null and the commit
    stamps it with the version it lands at (``2·V``).
    """
    ids = list(spec.id_columns)
    lf = lf.with_columns(
        pl.lit(graph.feature_version(spec.key)).alias(FEATURE_VERSION),
        pl.lit(snapshot_version or graph.snapshot_version).alias(SNAPSHOT_VERSION),
        pl.lit(created_at or now(), dtype=TIMESTAMP).alias(CREATED_AT),
        pl.lit(write_id or uuid.uuid4().hex).alias(WRITE_ID),
        pl.lit(commit_order, dtype=pl.Int64).alias(COMMIT_ORDER),
    )
    user = [c for c in lf.collect_schema() if c not in ids and c not in SYSTEM_COLUMNS]
    return lf.select([*ids, *user, *SYSTEM_COLUMNS])


def stamp(
    lf: pl.LazyFrame,
    spec: FeatureSpec,
    graph: FeatureGraph,
    *,
    write_id: str | None = None,
    snapshot_version: str | None = None,
    created_at: datetime | None = None,
    commit_order: int | None = None,
) -> pl.LazyFrame:
    """Add the derived system columns and the version/time/write stamps, in a canonical column order."""
    return stamp_versions(
        derive_versions(lf, spec),
        spec,
        graph,
        write_id=write_id,
        snapshot_version=snapshot_version,
        created_at=created_at,
        commit_order=commit_order,
    )
