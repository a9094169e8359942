"""Delta Lake metadata store: one append-only Delta table per feature under a root folder or S3 prefix.

This module is the store's public face: locations, reads, writes and the write scope. The work behind it
lives in modules of one concept each: :mod:`~metaxy_core.store.provenance` (system columns, hashes,
stamping), :mod:`~metaxy_core.store.increment` (``resolve_update``), :mod:`~metaxy_core.store.layout`
(what the Delta log proves), :mod:`~metaxy_core.store.scope` (the write scope),
:mod:`~metaxy_core.store.system` (system tables) and :mod:`~metaxy_core.store.maintenance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from metaxy_core.errors import DryRunWriteError as DryRunWriteError
from metaxy_core.errors import MetadataNotFoundError, MetadataSchemaError, StoreError
from metaxy_core.graph.graph import FeatureGraph, resolve_key
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.graph.spec import FeatureSpec
from metaxy_core.store import _io, frames, increment, layout, maintenance, provenance, scope, system
from metaxy_core.store._storage import is_remote, normalize_root, resolve_storage_options, secret_values
from metaxy_core.store.base import FeatureRef, FrameLike, Increment, MetadataStore
from metaxy_core.store.provenance import (
    COMMIT_ORDER,
    CREATED_AT,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    FEATURE_VERSION,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    SNAPSHOT_VERSION,
    SYSTEM_COLUMNS,
    TIMESTAMP,
    WRITE_ID,
)
from metaxy_core.store.scope import FeatureWrite, WriteScope
from metaxy_core.store.system import SYSTEM_DIR

if TYPE_CHECKING:
    from deltalake import DeltaTable


class DeltaMetadataStore(MetadataStore):
    """Metadata store on Delta Lake.

    Args:
        root_uri: a local folder (created on first write) or ``s3://bucket/prefix``.
        storage_options: delta-rs options (``AWS_ENDPOINT_URL``, ``AWS_REGION``, keys, ...). For S3, missing
            credentials are taken from boto3's standard chain; explicit options win.
        project: name that scopes pushed snapshots and the migration log.
        lock_ttl_seconds: the migration lock's lease: a holder that stops renewing it loses it after this.
        lock_heartbeat_seconds: how often a holder renews its lease (default: a quarter of the TTL).

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
        lock_ttl_seconds: float = 600.0,
        lock_heartbeat_seconds: float | None = None,
    ) -> None:
        self.root_uri = normalize_root(root_uri)
        self.project = project
        self.lock_ttl_seconds = lock_ttl_seconds
        self.lock_heartbeat_seconds = lock_heartbeat_seconds
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

    def storage_error(self, exc: BaseException) -> StoreError | None:
        """``exc`` as the store's one-line error when it is a failed request to this store's S3 endpoint made
        in a frame an operation collected itself, outside the store's own calls: a timeout reads as the stall
        error (endpoint, timeout, the setting to raise), anything else (a refused key, a missing bucket, the
        server down) names the table, the endpoint and what to check. None for anything else."""
        return _io.collected_error(exc, self.root_uri, self.storage_options)

    def table_uri(self, feature: FeatureRef | str) -> str:
        key = resolve_key(feature)
        return f"{self.root_uri}/{key.to_table_name()}"

    def system_table_uri(self, name: str) -> str:
        return f"{self.root_uri}/{SYSTEM_DIR}/{name}"

    @staticmethod
    def write_scope(write_id: str, *, dry_run: bool = False) -> AbstractContextManager[WriteScope]:
        """Attribute writes in this block to ``write_id`` (or refuse them in a dry run).

        The executor opens one per migration step; see :mod:`metaxy_core.store.scope`.
        """
        return scope.write_scope(write_id, dry_run=dry_run)

    @staticmethod
    def begin_write(feature: FeatureRef) -> FeatureWrite:
        """Start writing rows of ``feature`` in the current write scope, for writers that commit themselves.

        ``write_metadata`` does this on its own; a bulk writer (reconciliation) calls it before its first
        commit, stamps rows with the returned ``write_id`` and reports each commit with ``count(rows)``.

        Raises:
            DryRunWriteError: inside a dry-run scope.
        """
        return scope.begin_write(resolve_key(feature))

    # -------------------------------------------------------------------- helpers
    @staticmethod
    def _graph(graph: FeatureGraph | None) -> FeatureGraph:
        return graph if graph is not None else FeatureGraph.get_active()

    #: tables (or ``resolve_update`` inputs) above this many rows are processed in buckets of samples
    partition_rows: int = 2_000_000

    def scan_feature(self, feature: FeatureRef) -> pl.LazyFrame | None:
        """Every visible stored row of ``feature`` (all versions; rolled-back writes hidden), lazily.

        The engine's raw read, pinned to the table's current version; None when the feature has no table.
        :meth:`read_metadata` is the user-facing read (newest row per sample, filters, projection).
        """
        pinned = self.scan_feature_at(feature)
        return None if pinned is None else pinned[0]

    def scan_feature_at(self, feature: FeatureRef) -> tuple[pl.LazyFrame, DeltaTable] | None:
        """:meth:`scan_feature` and the table it is pinned to (shared: only read it).

        What the table's log proves (layouts, facts, see :mod:`metaxy_core.store.layout`) describes exactly
        the rows read: a table opened again may be at a later version, whose files a writer added meanwhile.
        Rows derived from this read (reconciliation's carried rows) are ordered after its version and before
        anything committed later (see :mod:`metaxy_core.store.order`).
        """
        key = resolve_key(feature)
        uri = self.table_uri(key)
        table = _io.open_table(uri, self.storage_options)
        if table is None:
            return None
        with _io.guard("read", uri, self.storage_options):
            lf = _io.scan_table(table, self.storage_options)
        hidden = self.hidden_write_ids(key)
        if hidden:
            lf = lf.filter(~pl.col(WRITE_ID).is_in(hidden))
        return lf, table

    def scan_external_table(self, uri: str) -> pl.LazyFrame | None:
        """Any Delta table at ``uri``, one this store does not manage (a Metaxy 0.1.6 store's, another
        tool's), read lazily with this store's storage options; None when there is no table there.

        The read gets what the store's own reads get: credentials from the AWS chain as of this call, the
        configured request timeouts (a stalled endpoint fails with the store's one-line message), credentials
        kept out of errors.
        """
        table = _io.open_table(uri, self.storage_options)
        if table is None:
            return None
        with _io.guard("read", uri, self.storage_options):
            return _io.scan_table(table, self.storage_options)

    def hidden_write_ids(self, feature: FeatureRef) -> list[str]:
        """Write ids whose rows are hidden from reads (rolled back); see the rollback docs."""
        return system.retracted_write_ids(self, resolve_key(feature))

    @staticmethod
    def latest_per_sample(lf: pl.LazyFrame, id_columns: list[str]) -> pl.LazyFrame:
        """Keep the newest row of every sample by commit order (a streaming group-by and semi-join, no sort).

        See :mod:`metaxy_core.store.order`: the Delta commit order decides, never a clock.
        """
        return layout.latest_per_sample(lf, id_columns)

    def current_rows(
        self, spec: FeatureSpec, graph: FeatureGraph, *, any_version: bool = False
    ) -> pl.LazyFrame | None:
        """The newest row of every sample at ``spec``'s current feature version (or at any version).

        What ``resolve_update`` and the expected provenance compare against; None when the feature has no
        table. The selection is skipped when the Delta log (or one distinct count) proves one row per sample.
        """
        pinned = self.scan_feature_at(spec.key)
        if pinned is None:
            return None
        lf, table = pinned
        version = None if any_version else graph.feature_version(spec.key)
        if version is not None:
            lf = lf.filter(pl.col(FEATURE_VERSION) == version)
        if not self._may_repeat(spec, lf, table, version):  # one row per sample already: no group-by + join
            return lf
        return self.latest_per_sample(lf, list(spec.id_columns))

    def _may_repeat(
        self,
        spec: FeatureSpec,
        lf: pl.LazyFrame,
        table: DeltaTable,
        feature_version: str | None,
        *,
        count_up_to: int | None = None,
    ) -> bool:
        """Whether ``lf`` (rows of ``spec``'s ``table``, as pinned by :meth:`scan_feature_at`) may hold a
        sample twice (see ``layout.may_repeat``)."""
        ids = list(spec.id_columns)
        uri = self.table_uri(spec.key)
        where = layout.table_layout(table, ids, lf.collect_schema(), feature_version)
        return layout.may_repeat(
            lf, ids, where, uri=uri, options=self.storage_options, count_up_to=count_up_to
        )

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
        pinned = self.scan_feature_at(spec.key)
        if pinned is None:
            if allow_missing:
                return _empty_frame(spec)
            raise MetadataNotFoundError(
                f"feature {spec.key} has no metadata in {self.root_uri} yet; write some with "
                "store.write_metadata (or run the pipeline that computes it) before reading"
            )
        lf, table = pinned
        if not include_history:
            version = feature_version or graph.feature_version(spec.key)
            lf = lf.filter(pl.col(FEATURE_VERSION) == version)
            # One row per sample already (proven by the Delta log's file statistics, or for modest tables by
            # one distinct count): skip the selection, a group-by and a join over every row.
            if self._may_repeat(spec, lf, table, version, count_up_to=self.partition_rows):
                lf = self.latest_per_sample(lf, ids)
        if filters is not None:
            for expr in filters if isinstance(filters, list) else [filters]:
                lf = frames.apply_filter(lf, expr)
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
        write = self.begin_write(spec.key)
        frame = self.prepare_rows(spec, df, graph)
        frame = self.stamp(
            frame, spec, graph, write_id=write_id or write.write_id, snapshot_version=snapshot_version
        )
        rows = _io.collect(frame, self.table_uri(spec.key), self.storage_options)
        self._check_unique_ids(spec, rows)
        rows = rows.drop("__no_upstream", strict=False)
        _io.append(
            self.table_uri(spec.key),
            rows,
            self.storage_options,
            what=f"rows for feature {spec.key}",
            custom_metadata=provenance.data_version_facts([rows]),
        )
        write.count(rows.height)
        return rows.height

    def prepare_rows(self, spec: FeatureSpec, df: FrameLike, graph: FeatureGraph) -> pl.LazyFrame:
        """Validate ids and the provenance struct; compute provenance for downstream rows lacking it.

        ``df`` may be any frame :func:`~metaxy_core.store.frames.to_polars_lazy` accepts (polars, narwhals,
        pyarrow, pandas).
        """
        lf = frames.to_polars_lazy(df, what=f"rows for feature {spec.key}")
        schema = lf.collect_schema()
        provenance.check_rows(spec, schema)
        if PROVENANCE_BY_FIELD not in schema:  # a downstream feature's rows: provenance from upstream
            # Only the upstream samples these rows are about are hashed: a pipeline writing one batch of a
            # large feature would otherwise hash every upstream sample (and hold them) on every write.
            expected = self.expected_provenance(spec, graph, samples=lf.select(spec.id_columns))
            # rows stay in the caller's order (id order, typically): reconciliation pairs rows by position
            # when a table and its upstream hold the same ids in the same order
            lf = lf.drop([c for c in SYSTEM_COLUMNS if c in schema]).join(
                expected, on=list(spec.id_columns), how="left", maintain_order="left"
            )
            lf = lf.with_columns(pl.col(PROVENANCE_BY_FIELD).is_null().alias("__no_upstream"))
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
        commit_order: int | None = None,
    ) -> pl.LazyFrame:
        """Add the derived system columns and the version/time/write stamps, in a canonical column order.

        ``commit_order`` is for rows derived from a read of the table (``2·R+1``, see
        :mod:`metaxy_core.store.order`); other rows get theirs when committed.
        """
        return provenance.stamp(
            lf,
            spec,
            graph,
            write_id=write_id,
            snapshot_version=snapshot_version,
            created_at=created_at,
            commit_order=commit_order,
        )

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
        samples: pl.LazyFrame | None = None,
    ) -> pl.LazyFrame:
        """Expected provenance of every sample computable from the upstream features' current rows.

        ``upstream`` (internal) supplies the upstream features' current rows (id columns and
        ``metaxy_data_version_by_field``) instead of reading them, e.g. one bucket of them. ``samples``
        (internal: id columns) limits the result to those samples, before any hashing.

        Raises:
            MetadataNotFoundError: an upstream feature has no metadata yet.
        """
        if upstream is None:
            upstream = {}
            for dep in spec.deps:
                lf = self.current_rows(graph.spec(dep.feature), graph)
                if lf is None:
                    raise MetadataNotFoundError(
                        f"feature {spec.key} depends on {dep.feature}, which has no metadata in "
                        f"{self.root_uri}; write {dep.feature} first"
                    )
                upstream[dep.feature] = lf
        if samples is not None:
            ids = list(spec.id_columns)
            upstream = {
                key: lf.join(samples, on=ids, how="semi", nulls_equal=True) for key, lf in upstream.items()
            }
        return provenance.provenance_from_upstream(spec, graph, upstream)

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
        downstream feature, ``removed`` is restricted to those ids as well. Inputs larger than
        :attr:`partition_rows` are compared one bucket of samples at a time (see
        :mod:`metaxy_core.store.increment`).
        """
        graph = self._graph(graph)
        spec = graph.spec(feature)
        if samples is not None:
            samples = frames.to_polars(samples, what=f"samples for feature {spec.key}")
        return increment.resolve_update(self, spec, graph, samples)

    # -------------------------------------------------------------- snapshots etc.
    def push_snapshot(self, graph: FeatureGraph | None = None, *, project: str | None = None) -> Any:
        """Record ``graph``'s snapshot as the deployed one (idempotent; see ``store.system``)."""
        return system.push_snapshot(self, self._graph(graph), project=project or self.project)

    def latest_snapshot(self, *, project: str | None = None) -> Any:
        return system.latest_snapshot(self, project=project or self.project)

    def load_snapshot_graph(self, snapshot_version: str, *, project: str | None = None) -> FeatureGraph:
        return system.load_snapshot_graph(self, snapshot_version, project=project or self.project)

    def list_snapshots(self, *, project: str | None = None) -> Any:
        return system.list_snapshots(self, project=project or self.project)

    # ---------------------------------------------------------------- maintenance
    def optimize(
        self, feature: FeatureRef | None = None, *, z_order: bool = False, target_size: int | None = None
    ) -> list[Any]:
        """Compact small files of one feature's table, or of every table (feature and system) when None.

        ``z_order`` also clusters feature tables on their id columns. Rows are unchanged; see
        :mod:`metaxy_core.store.maintenance`. Returns one report per table.
        """
        return maintenance.optimize(self, feature, z_order=z_order, target_size=target_size)

    def vacuum(
        self, feature: FeatureRef | None = None, *, retention_hours: float = 168.0, dry_run: bool = False
    ) -> list[Any]:
        """Delete data files unreferenced and older than ``retention_hours`` (``dry_run`` lists them)."""
        return maintenance.vacuum(self, feature, retention_hours=retention_hours, dry_run=dry_run)

    def checkpoint(self, feature: FeatureRef | None = None) -> list[Any]:
        """Write a Delta checkpoint of one feature's table, or of every table, and drop expired log files."""
        return maintenance.checkpoint(self, feature)

    def table_version(self, feature: FeatureRef | None = None, *, system: str | None = None) -> int | None:
        """Delta version of a feature's (or system) table; None when it does not exist."""
        uri = self.system_table_uri(system) if system else self.table_uri(feature)  # type: ignore[arg-type]
        table = _io.open_table(uri, self.storage_options)
        return None if table is None else table.version()


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
            COMMIT_ORDER: pl.Int64,
        }
    )
    return pl.LazyFrame(schema=schema)
