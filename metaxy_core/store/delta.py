"""Delta Lake metadata store: one append-only Delta table per feature under a root folder or S3 prefix."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path
from typing import Any

import polars as pl

from metaxy_core.errors import MetadataSchemaError, MetaxyError, StoreError
from metaxy_core.graph.graph import FeatureGraph, resolve_key
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.graph.spec import FeatureSpec
from metaxy_core.store import _io
from metaxy_core.store._storage import is_remote, normalize_root, resolve_storage_options, secret_values
from metaxy_core.store.base import FeatureRef, FrameLike, Increment, MetadataStore
from metaxy_core.store.provenance import (
    CREATED_AT,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    FEATURE_VERSION,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    SNAPSHOT_VERSION,
    SYSTEM_COLUMNS,
    WRITE_ID,
    combined_provenance,
    field_provenance,
)

SYSTEM_DIR = "_metaxy_system"
TIMESTAMP = pl.Datetime("us", "UTC")


class MetadataNotFoundError(StoreError):
    """A feature has no metadata in the store yet."""


class DryRunWriteError(MetaxyError):
    """Something tried to write to the store inside a dry run."""


@dataclass
class WriteScope:
    """Attributes every write made inside it (a migration step) to one write id, and counts the rows.

    The write id is what rollback uses to hide a migration's rows; a dry-run scope refuses writes, which
    guarantees that a dry run leaves every table version unchanged even if user code forgets to check.
    """

    write_id: str
    dry_run: bool = False
    rows_by_feature: dict[str, int] = field(default_factory=dict)


_SCOPE: contextvars.ContextVar[WriteScope | None] = contextvars.ContextVar("metaxy_write_scope", default=None)


class DeltaMetadataStore(MetadataStore):
    """Metadata store on Delta Lake.

    Args:
        root_uri: a local folder (created on first write) or ``s3://bucket/prefix``.
        storage_options: delta-rs options (``AWS_ENDPOINT_URL``, ``AWS_REGION``, keys, ...). For S3, missing
            credentials are taken from boto3's standard chain; explicit options win.
        project: name that scopes pushed snapshots and the migration log.

    Example:
        >>> with DeltaMetadataStore("/tmp/store") as store:
        ...     store.write_metadata(VideoRaw, frame)
        ...     store.read_metadata(VideoRaw).collect()
    """

    def __init__(
        self,
        root_uri: str | Path,
        storage_options: dict[str, str] | None = None,
        *,
        project: str = "default",
        lock_ttl_seconds: float = 3600.0,
    ) -> None:
        self.root_uri = normalize_root(root_uri)
        self.project = project
        self.lock_ttl_seconds = lock_ttl_seconds
        self._explicit_options = dict(storage_options or {})
        self._options: dict[str, str] | None = None

    def __repr__(self) -> str:  # never shows storage options: they may hold credentials
        return f"DeltaMetadataStore({self.root_uri!r}, project={self.project!r})"

    # ------------------------------------------------------------------ locations
    @property
    def storage_options(self) -> dict[str, str]:
        """Resolved lazily so constructing a store (e.g. at Dagster definition load) does no I/O."""
        if self._options is None:
            self._options = resolve_storage_options(self.root_uri, self._explicit_options)
        return self._options

    @property
    def secrets(self) -> list[str]:
        return secret_values(self.storage_options)

    @property
    def is_remote(self) -> bool:
        return is_remote(self.root_uri)

    def table_uri(self, feature: FeatureRef | str) -> str:
        key = resolve_key(feature)
        return f"{self.root_uri}/{key.to_table_name()}"

    def system_table_uri(self, name: str) -> str:
        return f"{self.root_uri}/{SYSTEM_DIR}/{name}"

    @staticmethod
    @contextmanager
    def write_scope(write_id: str, *, dry_run: bool = False) -> Iterator[WriteScope]:
        """Attribute writes in this block to ``write_id`` (or refuse them in a dry run)."""
        scope = WriteScope(write_id=write_id, dry_run=dry_run)
        token = _SCOPE.set(scope)
        try:
            yield scope
        finally:
            _SCOPE.reset(token)

    # -------------------------------------------------------------------- helpers
    @staticmethod
    def _graph(graph: FeatureGraph | None) -> FeatureGraph:
        return graph if graph is not None else FeatureGraph.get_active()

    #: tables (or ``resolve_update`` inputs) above this many rows are processed in buckets of samples
    partition_rows: int = 2_000_000
    #: internal: per-bucket stand-ins for feature tables (see :mod:`metaxy_core.store.partitioned`)
    _scan_overrides: dict[FeatureKey, pl.LazyFrame] | None = None

    def _scan_feature(self, key: FeatureKey) -> pl.LazyFrame | None:
        if self._scan_overrides is not None and key in self._scan_overrides:
            return self._scan_overrides[key]
        uri = self.table_uri(key)
        lf = _io.scan(uri, self.storage_options)
        if lf is None:
            return None
        hidden = self.hidden_write_ids(key)
        if hidden:
            lf = lf.filter(~pl.col(WRITE_ID).is_in(hidden))
        return lf

    def hidden_write_ids(self, key: FeatureKey) -> list[str]:
        """Write ids whose rows are hidden from reads (rolled back); see the rollback docs."""
        from metaxy_core.store.system import retracted_write_ids

        return retracted_write_ids(self, key)

    @staticmethod
    def latest_per_sample(lf: pl.LazyFrame, id_columns: list[str]) -> pl.LazyFrame:
        """Keep the newest row of every sample.

        A semi-join against the per-sample maximum timestamp streams (group-by + join) instead of sorting
        the whole table; write batches never hold duplicate ids, so timestamps only tie within a sample when
        two writes land in the same microsecond.
        """
        newest = lf.group_by(id_columns).agg(pl.col(CREATED_AT).max())
        return lf.join(newest, on=[*id_columns, CREATED_AT], how="semi", nulls_equal=True)

    def _current(
        self,
        spec: FeatureSpec,
        graph: FeatureGraph,
        *,
        feature_version: str | None = None,
        any_version: bool = False,
    ) -> pl.LazyFrame | None:
        lf = self._scan_feature(spec.key)
        if lf is None:
            return None
        version = None if any_version else (feature_version or graph.feature_version(spec.key))
        if version is not None:
            lf = lf.filter(pl.col(FEATURE_VERSION) == version)
        from metaxy_core.store.partitioned import may_repeat

        if not may_repeat(self, spec, lf, version):  # one row per sample already: skip the group-by + join
            return lf
        return self.latest_per_sample(lf, list(spec.id_columns))

    # ---------------------------------------------------------------------- reads
    def has_metadata(self, feature: FeatureRef) -> bool:
        return _io.table_exists(self.table_uri(feature), self.storage_options)

    def read_metadata(
        self,
        feature: FeatureRef,
        *,
        filters: pl.Expr | list[pl.Expr] | None = None,
        columns: list[str] | None = None,
        feature_version: str | None = None,
        include_history: bool = False,
        graph: FeatureGraph | None = None,
        allow_missing: bool = False,
    ) -> pl.LazyFrame:
        """Latest row per sample of the feature's current version, as a lazy frame.

        Args:
            filters: polars expressions applied to the latest rows (to every stored row with
                ``include_history``), so a filter never brings back a sample's outdated row.
            columns: project to these columns (id columns are always kept).
            feature_version: read another feature version instead of the current one.
            include_history: every stored row of every version (no latest-row selection).
            allow_missing: return an empty frame instead of raising when nothing was written yet.

        Raises:
            MetadataNotFoundError: the feature has no table yet (and ``allow_missing`` is false).
        """
        graph = self._graph(graph)
        spec = graph.spec(feature)
        ids = list(spec.id_columns)
        lf = self._scan_feature(spec.key)
        if lf is None:
            if allow_missing:
                return _empty_frame(spec)
            raise MetadataNotFoundError(
                f"feature {spec.key} has no metadata in {self.root_uri} yet; write some with "
                "store.write_metadata (or run the pipeline that computes it) before reading"
            )
        if not include_history:
            version = feature_version or graph.feature_version(spec.key)
            lf = lf.filter(pl.col(FEATURE_VERSION) == version)
            from metaxy_core.store.partitioned import may_repeat

            # One row per sample already (proven by the Delta log's file statistics, or for modest tables by one
            # distinct count): skip the selection, a group-by and a join over every row.
            if may_repeat(self, spec, lf, version, count_up_to=self.partition_rows):
                lf = self.latest_per_sample(lf, ids)
        if filters is not None:
            for expr in filters if isinstance(filters, list) else [filters]:
                lf = lf.filter(expr)
        if columns is not None:
            lf = lf.select([*ids, *[c for c in columns if c not in ids]])
        return lf

    # --------------------------------------------------------------------- writes
    def write_metadata(
        self,
        feature: FeatureRef,
        df: FrameLike,
        *,
        graph: FeatureGraph | None = None,
        write_id: str | None = None,
        snapshot_version: str | None = None,
    ) -> int:
        """Append rows for ``feature`` stamped with its current feature and snapshot versions.

        Root features' rows must bring ``metaxy_provenance_by_field`` (one string per field, e.g. content
        hashes). Downstream rows may bring it (from :meth:`resolve_update`) or have it computed here from the
        upstream data versions. Rows are written in one Delta commit: a failed write leaves nothing behind.

        Returns:
            The number of rows written.
        """
        graph = self._graph(graph)
        spec = graph.spec(feature)
        scope = self._guard_write(spec)
        frame = self.prepare_rows(spec, df, graph)
        frame = self.stamp(
            frame,
            spec,
            graph,
            write_id=write_id or (scope.write_id if scope else None),
            snapshot_version=snapshot_version,
        )
        rows = _io.collect(frame, self.table_uri(spec.key), self.storage_options)
        self._check_unique_ids(spec, rows)
        rows = rows.drop("__no_upstream", strict=False)
        _io.append(self.table_uri(spec.key), rows, self.storage_options)
        self._count(scope, spec, rows.height)
        return rows.height

    def append_stream(self, feature: FeatureRef, lf: pl.LazyFrame, *, batch_rows: int = 500_000) -> int:
        """Append already-stamped rows in batches of ``batch_rows``, one Delta commit per batch.

        Memory stays bounded by the batch size, not the table size. A crash between batches leaves whole
        batches behind; callers make re-runs skip what was written (reconciliation anti-joins on ids).
        """
        key = resolve_key(feature)
        scope = self._guard_write(key)
        uri = self.table_uri(key)
        total = 0
        with _io.guard("write to", uri, self.storage_options):
            for batch in lf.collect_batches(chunk_size=batch_rows):
                if batch.height:
                    _io.append(uri, batch, self.storage_options)
                    total += batch.height
        self._count(scope, key, total)
        return total

    @staticmethod
    def _guard_write(feature: FeatureSpec | FeatureKey) -> WriteScope | None:
        scope = _SCOPE.get()
        if scope is not None and scope.dry_run:
            key = feature.key if isinstance(feature, FeatureSpec) else feature
            raise DryRunWriteError(
                f"a write to feature {key} was attempted during a dry run (step {scope.write_id}); "
                "operations must check `dry_run` and only count the rows they would write"
            )
        return scope

    @staticmethod
    def _count(scope: WriteScope | None, feature: FeatureSpec | FeatureKey, rows: int) -> None:
        if scope is not None:
            key = (feature.key if isinstance(feature, FeatureSpec) else feature).to_string()
            scope.rows_by_feature[key] = scope.rows_by_feature.get(key, 0) + rows

    def prepare_rows(self, spec: FeatureSpec, df: FrameLike, graph: FeatureGraph) -> pl.LazyFrame:
        """Validate ids and the provenance struct; compute provenance for downstream rows lacking it."""
        lf = df.lazy()
        schema = lf.collect_schema()
        ids = list(spec.id_columns)
        missing = [c for c in ids if c not in schema]
        if missing:
            raise MetadataSchemaError(
                f"rows for feature {spec.key} lack id column(s) {missing}; every row needs {ids}"
            )
        fields = spec.field_names
        if PROVENANCE_BY_FIELD not in schema:
            if not spec.deps:
                raise MetadataSchemaError(
                    f"rows for root feature {spec.key} must bring {PROVENANCE_BY_FIELD}: a struct with one "
                    f"string per field ({', '.join(fields)}), e.g. content hashes of the source files"
                )
            expected = self.expected_provenance(spec, graph)
            lf = lf.drop([c for c in SYSTEM_COLUMNS if c in schema]).join(expected, on=ids, how="left")
            lf = lf.with_columns(pl.col(PROVENANCE_BY_FIELD).is_null().alias("__no_upstream"))
        else:
            _check_struct(spec, schema[PROVENANCE_BY_FIELD], PROVENANCE_BY_FIELD)
            if DATA_VERSION_BY_FIELD in schema:
                _check_struct(spec, schema[DATA_VERSION_BY_FIELD], DATA_VERSION_BY_FIELD)
        return lf

    def stamp(
        self,
        lf: pl.LazyFrame,
        spec: FeatureSpec,
        graph: FeatureGraph,
        *,
        write_id: str | None = None,
        snapshot_version: str | None = None,
        created_at: datetime | None = None,
    ) -> pl.LazyFrame:
        """Add the derived system columns and the version/time/write stamps, in a canonical column order."""
        schema = lf.collect_schema()
        fields = spec.field_names
        ids = list(spec.id_columns)
        struct = pl.col(PROVENANCE_BY_FIELD)
        lf = lf.with_columns(pl.struct([struct.struct.field(f) for f in fields]).alias(PROVENANCE_BY_FIELD))
        lf = lf.with_columns(combined_provenance(PROVENANCE_BY_FIELD, fields).alias(PROVENANCE))
        if DATA_VERSION_BY_FIELD in schema:
            dv = pl.col(DATA_VERSION_BY_FIELD)
            lf = lf.with_columns(
                pl.struct(
                    [pl.coalesce(dv.struct.field(f), struct.struct.field(f)).alias(f) for f in fields]
                ).alias(DATA_VERSION_BY_FIELD)
            )
        else:
            lf = lf.with_columns(pl.col(PROVENANCE_BY_FIELD).alias(DATA_VERSION_BY_FIELD))
        derived = combined_provenance(DATA_VERSION_BY_FIELD, fields)
        lf = lf.with_columns(
            (pl.coalesce(pl.col(DATA_VERSION), derived) if DATA_VERSION in schema else derived).alias(
                DATA_VERSION
            )
        )
        lf = lf.with_columns(
            pl.lit(graph.feature_version(spec.key)).alias(FEATURE_VERSION),
            pl.lit(snapshot_version or graph.snapshot_version).alias(SNAPSHOT_VERSION),
            pl.lit(created_at or datetime.now(UTC), dtype=TIMESTAMP).alias(CREATED_AT),
            pl.lit(write_id or uuid.uuid4().hex).alias(WRITE_ID),
        )
        user = [c for c in lf.collect_schema() if c not in ids and c not in SYSTEM_COLUMNS]
        return lf.select([*ids, *user, *SYSTEM_COLUMNS])

    def _check_unique_ids(self, spec: FeatureSpec, rows: pl.DataFrame) -> None:
        ids = list(spec.id_columns)
        if "__no_upstream" in rows.columns:
            orphans = rows.filter(pl.col("__no_upstream"))
            if orphans.height:
                sample = orphans.select(ids).head(3).to_dicts()
                raise MetadataSchemaError(
                    f"{orphans.height} row(s) for feature {spec.key} have no matching upstream rows "
                    f"(e.g. {sample}); write the upstream features first, or pass rows from resolve_update"
                )
        nulls = rows.select(pl.any_horizontal([pl.col(c).is_null() for c in ids]).sum()).item()
        if nulls:
            raise MetadataSchemaError(f"{nulls} row(s) for feature {spec.key} have a null id column ({ids})")
        dupes = rows.height - rows.select(ids).n_unique()
        if dupes:
            raise MetadataSchemaError(
                f"rows for feature {spec.key} repeat {dupes} sample id(s); write one row per sample ({ids})"
            )
        prov_nulls = rows.select(
            pl.any_horizontal(
                [pl.col(PROVENANCE_BY_FIELD).struct.field(f).is_null() for f in spec.field_names]
            ).sum()
        ).item()
        if prov_nulls:
            raise MetadataSchemaError(
                f"{prov_nulls} row(s) for feature {spec.key} have a null value in {PROVENANCE_BY_FIELD}; "
                "every field needs a provenance string"
            )

    # -------------------------------------------------------------- resolve_update
    def expected_provenance(
        self,
        spec: FeatureSpec,
        graph: FeatureGraph,
        *,
        upstream: Mapping[FeatureKey, pl.LazyFrame] | None = None,
    ) -> pl.LazyFrame:
        """Expected provenance of every sample computable from the upstream features' current rows.

        ``upstream`` (internal) supplies the upstream features' current rows (id columns and
        ``metaxy_data_version_by_field``) instead of reading them, e.g. one bucket of them.
        """
        ids = list(spec.id_columns)
        frames = []
        for i, dep in enumerate(spec.deps):
            lf = (
                upstream[dep.feature]
                if upstream is not None
                else self._current(graph.spec(dep.feature), graph)
            )
            if lf is None:
                raise MetadataNotFoundError(
                    f"feature {spec.key} depends on {dep.feature}, which has no metadata in {self.root_uri}; "
                    f"write {dep.feature} first"
                )
            frames.append(lf.select([*ids, pl.col(DATA_VERSION_BY_FIELD).alias(f"__up{i}")]))
        joined = reduce(lambda a, b: a.join(b, on=ids, how="inner", nulls_equal=True), frames)
        position = {dep.feature: i for i, dep in enumerate(spec.deps)}
        field_exprs = []
        for field in spec.fields:
            parts = [
                pl.col(f"__up{position[uk]}").struct.field(uf.to_table_name())
                for uk, uf in graph.resolved_field_deps(spec.key, field.key)
            ]
            field_exprs.append(
                field_provenance(graph.field_version(spec.key, field.key), parts).alias(
                    field.key.to_table_name()
                )
            )
        return joined.select([*ids, pl.struct(field_exprs).alias(PROVENANCE_BY_FIELD)]).with_columns(
            combined_provenance(PROVENANCE_BY_FIELD, spec.field_names).alias(PROVENANCE)
        )

    def resolve_update(
        self, feature: FeatureRef, *, samples: FrameLike | None = None, graph: FeatureGraph | None = None
    ) -> Increment:
        """Which samples of ``feature`` are new, changed or gone, compared with what is stored.

        Expected provenance comes from the upstream features' current data versions (joined on the feature's
        id columns, field by field along field-level lineage). For a root feature, pass ``samples`` carrying
        their own ``metaxy_provenance_by_field``. For a downstream feature, ``samples`` (optional) restricts
        the comparison to those ids and its extra columns are carried into the result.

        The stored side is the newest row of each sample across feature versions, so a code-version bump
        shows up as ``changed`` rather than as new samples (for a root feature too, whose provenance comes
        from its data: a row stored under another feature version is ``changed``). With ``samples`` on a
        downstream feature, ``removed`` is restricted to those ids as well.
        """
        graph = self._graph(graph)
        spec = graph.spec(feature)
        if self._scan_overrides is None:  # large inputs: the same comparison, one bucket of samples at a time
            from metaxy_core.store.partitioned import bucketed_increment

            bucketed = bucketed_increment(self, spec, graph, samples)
            if bucketed is not None:
                return bucketed
        ids = list(spec.id_columns)
        requested_ids: pl.LazyFrame | None = None
        if not spec.deps:
            if samples is None:
                raise MetaxyError(
                    f"feature {spec.key} is a root feature: pass samples= with its id columns and "
                    f"{PROVENANCE_BY_FIELD} (the root's provenance comes from its data, not from upstream)"
                )
            expected = self.prepare_rows(spec, samples, graph)
            expected = expected.with_columns(
                pl.struct([pl.col(PROVENANCE_BY_FIELD).struct.field(f) for f in spec.field_names]).alias(
                    PROVENANCE_BY_FIELD
                )
            ).with_columns(combined_provenance(PROVENANCE_BY_FIELD, spec.field_names).alias(PROVENANCE))
        else:
            expected = self.expected_provenance(spec, graph)
            if samples is not None:
                given = samples.lazy()
                missing = [c for c in ids if c not in given.collect_schema()]
                if missing:
                    raise MetadataSchemaError(f"samples for feature {spec.key} lack id column(s) {missing}")
                keep = [c for c in given.collect_schema() if c not in SYSTEM_COLUMNS]
                expected = given.select(keep).join(expected, on=ids, how="inner", nulls_equal=True)
                requested_ids = given.select(ids)
        stored = self._current(spec, graph, any_version=True)
        if stored is None:
            schema = expected.collect_schema()
            removed_schema = {c: schema[c] for c in ids}
            removed_schema.update({PROVENANCE_BY_FIELD: schema[PROVENANCE_BY_FIELD], PROVENANCE: pl.String})
            empty = pl.LazyFrame(schema=removed_schema)
            return Increment(added=expected, changed=expected.head(0), removed=empty)
        stored_prov = stored.select(
            [*ids, pl.col(PROVENANCE).alias("__stored"), pl.col(FEATURE_VERSION).alias("__stored_version")]
        )
        added = expected.join(stored_prov, on=ids, how="anti", nulls_equal=True)
        changed = (
            expected.join(stored_prov, on=ids, how="inner", nulls_equal=True)
            .filter(
                (pl.col(PROVENANCE) != pl.col("__stored"))
                | (pl.col("__stored_version") != graph.feature_version(spec.key))
            )
            .drop("__stored", "__stored_version")
        )
        removed = stored.select([*ids, PROVENANCE_BY_FIELD, PROVENANCE])
        if requested_ids is not None:
            removed = removed.join(requested_ids, on=ids, how="semi", nulls_equal=True)
        removed = removed.join(expected.select(ids), on=ids, how="anti", nulls_equal=True)
        return Increment(added=added, changed=changed, removed=removed)

    # -------------------------------------------------------------- snapshots etc.
    def push_snapshot(self, graph: FeatureGraph | None = None, *, project: str | None = None) -> Any:
        """Record ``graph``'s snapshot as the deployed one (idempotent); see :mod:`metaxy_core.store.system`."""
        from metaxy_core.store.system import push_snapshot

        return push_snapshot(self, self._graph(graph), project=project or self.project)

    def latest_snapshot(self, *, project: str | None = None) -> Any:
        from metaxy_core.store.system import latest_snapshot

        return latest_snapshot(self, project=project or self.project)

    def load_snapshot_graph(self, snapshot_version: str, *, project: str | None = None) -> FeatureGraph:
        from metaxy_core.store.system import load_snapshot_graph

        return load_snapshot_graph(self, snapshot_version, project=project or self.project)

    def list_snapshots(self, *, project: str | None = None) -> Any:
        from metaxy_core.store.system import list_snapshots

        return list_snapshots(self, project=project or self.project)

    # ---------------------------------------------------------------- maintenance
    def optimize(
        self, feature: FeatureRef | None = None, *, z_order: bool = False, target_size: int | None = None
    ) -> list[Any]:
        """Compact small files of one feature's table, or of every table (feature and system) when None.

        ``z_order`` also clusters feature tables on their id columns. Rows are unchanged; see
        :mod:`metaxy_core.store.maintenance`. Returns one report per table.
        """
        from metaxy_core.store import maintenance

        return maintenance.optimize(self, feature, z_order=z_order, target_size=target_size)

    def vacuum(
        self, feature: FeatureRef | None = None, *, retention_hours: float = 168.0, dry_run: bool = False
    ) -> list[Any]:
        """Delete data files no longer referenced and older than ``retention_hours`` (``dry_run`` lists them)."""
        from metaxy_core.store import maintenance

        return maintenance.vacuum(self, feature, retention_hours=retention_hours, dry_run=dry_run)

    def checkpoint(self, feature: FeatureRef | None = None) -> list[Any]:
        """Write a Delta checkpoint of one feature's table, or of every table, and drop expired log files."""
        from metaxy_core.store import maintenance

        return maintenance.checkpoint(self, feature)

    def table_version(self, feature: FeatureRef | None = None, *, system: str | None = None) -> int | None:
        """Delta version of a feature's (or system) table; None when it does not exist."""
        uri = self.system_table_uri(system) if system else self.table_uri(feature)  # type: ignore[arg-type]
        table = _io.open_table(uri, self.storage_options)
        return None if table is None else table.version()


def _check_struct(spec: FeatureSpec, dtype: pl.DataType, column: str) -> None:
    fields = spec.field_names
    if not isinstance(dtype, pl.Struct):
        raise MetadataSchemaError(
            f"{column} for feature {spec.key} must be a struct with one string per field ({fields}), got {dtype}"
        )
    got = {f.name: f.dtype for f in dtype.fields}
    if set(got) != set(fields) or any(d != pl.String for d in got.values()):
        raise MetadataSchemaError(
            f"{column} for feature {spec.key} must be a struct with exactly the string fields {fields}; "
            f"got {{{', '.join(f'{k}: {v}' for k, v in got.items())}}}"
        )


def _empty_frame(spec: FeatureSpec) -> pl.LazyFrame:
    struct = pl.Struct({f: pl.String for f in spec.field_names})
    schema: dict[str, Any] = {c: pl.String for c in spec.id_columns}
    schema.update(
        {
            PROVENANCE_BY_FIELD: struct,
            PROVENANCE: pl.String,
            DATA_VERSION_BY_FIELD: struct,
            DATA_VERSION: pl.String,
            FEATURE_VERSION: pl.String,
            SNAPSHOT_VERSION: pl.String,
            CREATED_AT: TIMESTAMP,
            WRITE_ID: pl.String,
        }
    )
    return pl.LazyFrame(schema=schema)
