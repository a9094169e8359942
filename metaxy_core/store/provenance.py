"""Per-row provenance hashes, computed inside polars.

Row hash algorithm (pinned by tests/core/test_versions.py, which recomputes it with the reference ``xxhash``
package): XXH3-64 (seed 0) over the UTF-8 bytes of the ``|``-joined inputs, written as the unsigned decimal
string of the 64-bit digest.

* downstream field provenance = H(field_version | upstream data versions of the fields it depends on, in
  sorted (feature, field) order);
* ``metaxy_provenance`` = H(field provenances in sorted field order);
* ``metaxy_data_version_by_field`` / ``metaxy_data_version`` default to the provenance; a writer may supply
  its own (a content hash) to stop propagation when a recomputation produced identical data.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import polars_hash  # noqa: F401  (registers the .nchash namespace)

PROVENANCE_BY_FIELD = "metaxy_provenance_by_field"
PROVENANCE = "metaxy_provenance"
DATA_VERSION_BY_FIELD = "metaxy_data_version_by_field"
DATA_VERSION = "metaxy_data_version"
FEATURE_VERSION = "metaxy_feature_version"
SNAPSHOT_VERSION = "metaxy_snapshot_version"
CREATED_AT = "metaxy_created_at"
WRITE_ID = "metaxy_write_id"

SYSTEM_COLUMNS = (
    PROVENANCE_BY_FIELD,
    PROVENANCE,
    DATA_VERSION_BY_FIELD,
    DATA_VERSION,
    FEATURE_VERSION,
    SNAPSHOT_VERSION,
    CREATED_AT,
    WRITE_ID,
)

SEPARATOR = "|"


def row_hash(parts: Sequence[pl.Expr]) -> pl.Expr:
    """XXH3-64 over the ``|``-joined string parts, as a decimal string."""
    joined = pl.concat_str(list(parts), separator=SEPARATOR)
    return joined.nchash.xxh3_64().cast(pl.String)  # type: ignore[attr-defined]


def combined_provenance(struct_col: str, fields: Sequence[str]) -> pl.Expr:
    """``metaxy_provenance`` from a provenance struct column."""
    return row_hash([pl.col(struct_col).struct.field(f) for f in sorted(fields)])


def field_provenance(field_version: str, upstream: Sequence[pl.Expr]) -> pl.Expr:
    return row_hash([pl.lit(field_version), *upstream])
