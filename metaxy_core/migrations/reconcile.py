"""Carrying stored rows over to a new feature version: the engine of ``DataVersionReconciliation``.

When a feature's version changes but its data does not need recomputing (a refined field lineage, a renamed
upstream field...), its rows at the old version are *carried over*: each keeps its user columns, gets its
provenance recomputed under the new graph from the upstream features' current data versions (joined on the
feature's id columns), is stamped with the new versions and appended. Samples already at the new version
(recomputed by the pipeline, or carried by an interrupted run) are left alone, which makes a re-run resume
without duplicates.

Carried rows are *derived* from the table as read at version ``R``: they carry the commit order ``2·R+1``
(see :mod:`metaxy_core.store.order`), after every row they were derived from and before anything committed
after that read. A row a pipeline writes at the new version while the reconciliation runs therefore stays the
newest row of its sample, in every bucket, whenever the bucket's commit lands; no re-check is needed.

:func:`carry_over` does this in bounded memory at any table size: samples are split into buckets (see
:mod:`metaxy_core.store.buckets`), each bucket is computed in memory and appended in one commit while the
next one is computed. :func:`left_behind` counts what is still at the old version (what verification
checks and what a dry run of a later step estimates).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from metaxy_core.errors import MetadataNotFoundError
from metaxy_core.store import bulk
from metaxy_core.store.buckets import DEFAULT_PARTITION_ROWS, Buckets, Partitioning, plan, sampled_ranges
from metaxy_core.store.layout import Layout, feature_default_data_versions, newest_rows, table_layout
from metaxy_core.store.order import derived
from metaxy_core.store.provenance import (
    COMMIT_ORDER,
    CREATED_AT,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    FEATURE_VERSION,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    SNAPSHOT_VERSION,
    WRITE_ID,
    fill_data_versions,
    stamp_versions,
)
from metaxy_core.store.scope import current_fence

if TYPE_CHECKING:
    from metaxy_core.graph.graph import FeatureGraph
    from metaxy_core.graph.keys import FeatureKey
    from metaxy_core.graph.spec import FeatureSpec
    from metaxy_core.migrations.context import OperationContext
    from metaxy_core.store.delta import DeltaMetadataStore


@dataclass
class CarryOverResult:
    """What :func:`carry_over` did: rows carried (or that would be), samples without upstream rows, and how.

    ``buckets``/``mode``/``spilled`` describe the partitioning (``single``, ``range`` or ``hash`` buckets and
    the inputs that had to be spilled); ``timings`` holds wall and CPU seconds per phase (spill, read,
    compute, write), for benchmarks.
    """

    rows: int = 0
    missing: int = 0
    buckets: int = 1
    mode: str = "single"
    spilled: list[str] = field(default_factory=list)
    commits: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    paired: int = 0  # buckets whose rows were paired with their upstream rows by position, without a join
    #: buckets whose old rows were proven one per sample by holding the ids of (deduplicated) upstream rows
    #: in the same order, instead of counting distinct ids
    unique_by_position: int = 0
    #: the Delta log proved the old rows' data versions are the defaults: those columns were not read
    default_data_versions_proven: bool = False
    #: buckets whose upstream rows (one dependency, one row per sample) were hashed in the query reading them
    hashed_with_reads: int = 0


@contextmanager
def _timed(result: CarryOverResult, name: str) -> Iterator[None]:
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        result.timings[name] = result.timings.get(name, 0.0) + time.perf_counter() - start
        result.timings[f"{name}_cpu"] = result.timings.get(f"{name}_cpu", 0.0) + time.process_time() - cpu


def carry_over(
    store: DeltaMetadataStore,
    spec: FeatureSpec,
    *,
    old_graph: FeatureGraph,
    new_graph: FeatureGraph,
    write_id: str | None,
    snapshot_version: str,
    dry_run: bool = False,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
    on_commit: Callable[[int], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    partitioning: Partitioning | None = None,
    only_buckets: Collection[int] | None = None,
) -> CarryOverResult:
    """Reconcile one downstream feature: carry its rows at the old version over to the new version.

    Bucket by bucket: the newest row of every sample at the old version that has no row at the new version
    yet keeps its user columns, gets its provenance recomputed from the upstream features' current data
    versions, is stamped with the new versions and appended (one commit per bucket). Re-running skips samples
    already carried, so an interrupted run resumes without duplicates. In a dry run nothing is written and
    ``rows`` is what would be. ``on_commit`` is called with the row count of every commit, ``on_progress``
    after every bucket with (rows at the old version gone through, their total from the Delta log's stats).

    Units of work (:mod:`metaxy_core.migrations.units`) run parts of one plan, possibly in other processes:
    ``partitioning`` fixes the buckets (from :func:`carry_plan`, made once for all units) and
    ``only_buckets`` runs just those (hash buckets then spill only their own rows).

    Raises:
        MetadataNotFoundError: an upstream feature has no metadata.
    """
    key = spec.key
    ids = list(spec.id_columns)
    old_version, new_version = old_graph.feature_version(key), new_graph.feature_version(key)
    uri = store.table_uri(key)
    result = CarryOverResult()
    pinned = store.scan_feature_at(key)
    if pinned is None:
        return result
    scan, table = pinned  # layouts and facts below come from the version these rows are read at
    commit_order = derived(table.version())  # after what was read, before anything committed since
    fence = current_fence()  # the lease of this step; the background writer's thread does not see it
    schema = scan.collect_schema()
    old_where = table_layout(table, ids, schema, old_version)
    done_where = table_layout(table, ids, schema, new_version)
    keep = [c for c in schema if c not in (PROVENANCE_BY_FIELD, SNAPSHOT_VERSION, WRITE_ID, FEATURE_VERSION)]
    # When the Delta log proves every old row has its default data version (recorded by the writers), the
    # old provenance and data versions (two long hash strings per row) are not read at all: the carried rows'
    # data versions follow the new provenance.
    proven = _lean_stamp_ok(schema, spec) and feature_default_data_versions(store, key, table, old_version)
    result.default_data_versions_proven = proven
    if proven:
        old_rows = scan.filter(pl.col(FEATURE_VERSION) == old_version).select(
            [c for c in keep if c not in (PROVENANCE, DATA_VERSION, DATA_VERSION_BY_FIELD)]
        )
    else:
        # The stored data-version struct only matters for custom data versions: null it for default ones,
        # so that a spill of the old rows (hash buckets) writes and reads a fraction of it.
        old_rows = (
            scan.filter(pl.col(FEATURE_VERSION) == old_version)
            .select(keep)
            .with_columns(
                pl.when(pl.col(DATA_VERSION) == pl.col(PROVENANCE))
                .then(pl.lit(None, dtype=schema[DATA_VERSION_BY_FIELD]))
                .otherwise(pl.col(DATA_VERSION_BY_FIELD))
                .alias(DATA_VERSION_BY_FIELD)
            )
        )
    inputs: list[tuple[str, pl.LazyFrame, Layout]] = [
        ("old", old_rows, old_where),
        ("done", scan.filter(pl.col(FEATURE_VERSION) == new_version).select(ids), done_where),
    ]
    for i, dep in enumerate(spec.deps):
        up_spec = new_graph.spec(dep.feature)
        up_version = new_graph.feature_version(up_spec.key)
        up_pinned = store.scan_feature_at(up_spec.key)
        if up_pinned is None:
            raise MetadataNotFoundError(
                f"feature {key} depends on {dep.feature}, which has no metadata in {store.root_uri}; "
                f"write {dep.feature} first"
            )
        up_scan, up_table = up_pinned
        up_schema = up_scan.collect_schema()
        up_where = table_layout(up_table, ids, up_schema, up_version)
        ordering = [CREATED_AT, COMMIT_ORDER] if COMMIT_ORDER in up_schema else [CREATED_AT]
        inputs.append(
            (
                f"up{i}",
                up_scan.filter(pl.col(FEATURE_VERSION) == up_version).select(
                    [*ids, DATA_VERSION_BY_FIELD, *ordering]
                ),
                up_where,
            )
        )
    if partitioning is None:
        partitioning = plan(old_where, ids, partition_rows)
        if partitioning.mode == "hash":  # files not in id order: spill by id ranges, so that the files
            # written here are in id order and the next reconciliation of this feature needs no spill
            sampled = scan.filter(pl.col(FEATURE_VERSION) == old_version)
            partitioning = sampled_ranges(sampled, ids, old_where.rows, partition_rows) or partitioning
    todo_buckets = range(partitioning.k) if only_buckets is None else sorted(set(only_buckets))
    result.buckets, result.mode = partitioning.k, partitioning.mode
    repeats = {name: where.may_repeat for name, _, where in inputs}
    lean = _lean_stamp_ok(schema, spec)
    n_deps = len(spec.deps)

    def committed(rows: int) -> None:
        result.rows += rows
        result.commits += 1
        if on_commit is not None:
            on_commit(rows)

    writer = bulk.BackgroundWriter(committed)
    with Buckets(partitioning) as buckets, contextlib.closing(writer):
        with _timed(result, "spill"):
            for name, lf, where in inputs:
                if only_buckets is not None and partitioning.mode == "hash":  # spill this unit's share only
                    lf = lf.filter(partitioning.key(lf.collect_schema()).is_in(list(todo_buckets)))
                # an input of at most a quarter bucket (what a resumed run already carried...) stays in memory
                buckets.add(name, lf, where, hold_rows=partition_rows // 4)
        result.spilled = list(buckets.spilled)
        seen, total = 0, old_where.rows
        previous: int | None = None
        for b in todo_buckets:
            if previous is not None:  # its rows are in memory: free its spill files while this one is read
                buckets.release(previous)
            previous = b
            if on_progress is not None and b:
                on_progress(seen, total)
            with _timed(result, "read"):
                # The stored data-version struct is only needed for custom data versions; most rows have the
                # default one (equal to the provenance), so read it only for buckets that have others.
                old_rows = buckets.get("old", b)
                first = old_rows if proven else old_rows.drop(DATA_VERSION_BY_FIELD)
                read_ups: list[pl.DataFrame] | None
                hashed: pl.DataFrame | None = None  # the expected provenance, when computed with the reads
                if inputs[1][2].rows:  # some samples are carried already (a resumed run): upstream rows are
                    todo, read_ups = first.collect(), None  # read below only for what is left to carry
                elif n_deps == 1 and not repeats["up0"]:  # one upstream row per sample: it is hashed in the
                    # query reading the old rows (the reads alone leave a core idle); rows in upstream order
                    up = {spec.deps[0].feature: buckets.get("up0", b)}
                    todo, hashed = pl.collect_all([first, _expected(store, spec, new_graph, up)])
                    read_ups = []
                    result.hashed_with_reads += 1
                else:  # the old rows and the upstream rows are read at once: each read alone is mostly
                    # one thread (files of a few row groups), together they use the cores the writer leaves
                    todo, *read_ups = pl.collect_all(
                        [first, *(buckets.get(f"up{i}", b) for i in range(n_deps))]
                    )
                seen += todo.height
                if not proven:
                    dv = todo.get_column(DATA_VERSION)
                    if not lean or dv.has_nulls() or not (dv == todo.get_column(PROVENANCE)).all():
                        todo = old_rows.collect()
                if todo.height and inputs[1][2].rows:
                    done_ids = buckets.get("done", b).collect()
                    if done_ids.height:
                        todo = todo.join(done_ids, on=ids, how="anti", nulls_equal=True)
                if todo.height == 0:
                    continue
                ups = {}
                old_may_repeat = repeats["old"]  # the log could not rule out a sample stored twice
                for i, dep in enumerate(spec.deps if hashed is None else ()):
                    frame = buckets.get(f"up{i}", b).collect() if read_ups is None else read_ups[i]
                    if repeats[f"up{i}"]:
                        frame = newest_rows(frame, ids)
                    ups[dep.feature] = frame.lazy()
                    if i == 0 and old_may_repeat and _same_ids(todo, frame, ids):
                        # each old row matches one of the upstream rows (one per sample), in order
                        old_may_repeat = False
                        result.unique_by_position += 1
                if hashed is not None and old_may_repeat and _same_ids(todo, hashed, ids):
                    old_may_repeat = False  # as above: the hashed rows are the upstream rows, in order
                    result.unique_by_position += 1
                if old_may_repeat:
                    todo = newest_rows(todo, ids)
            with _timed(result, "compute"):
                expected = _expected(store, spec, new_graph, ups).collect() if hashed is None else hashed
                carried, paired = pair_rows(todo, expected, ids)
                result.paired += paired
                if dry_run:
                    rows = carried.select(pl.len()).collect().item()
                    result.rows += rows
                    result.missing += todo.height - rows
                    continue
                if proven or (lean and not todo.get_column(DATA_VERSION).has_nulls()):
                    stamped = _stamp_carried(
                        carried, spec, new_graph, write_id, snapshot_version, commit_order
                    )
                else:
                    stamped = store.stamp(
                        _carry_columns(carried),
                        spec,
                        new_graph,
                        write_id=write_id,
                        snapshot_version=snapshot_version,
                        commit_order=commit_order,
                    )
                out = stamped.collect()
                result.missing += todo.height - out.height
                del todo, carried, ups, expected, hashed
            with _timed(result, "write"):
                # The previous bucket's write overlaps this bucket's reads and joins (both release the GIL):
                # at most one bucket being written and one being computed, so memory stays at two buckets.
                writer.finish()
                writer.start(bulk.append_frames, uri, [out], store.storage_options, ids=ids, fence=fence)
            del out
        with _timed(result, "write"):
            writer.finish()
        if on_progress is not None:
            on_progress(seen, total)
    return result


def _expected(
    store: DeltaMetadataStore, spec: FeatureSpec, graph: FeatureGraph, ups: Mapping[FeatureKey, pl.LazyFrame]
) -> pl.LazyFrame:
    """The new provenance of the samples of ``ups`` (upstream rows of one bucket, one per sample), its
    columns renamed apart from the old rows' ones."""
    ups = {key: lf.drop(CREATED_AT, COMMIT_ORDER, strict=False) for key, lf in ups.items()}
    return store.expected_provenance(spec, graph, upstream=ups).rename(
        {PROVENANCE_BY_FIELD: "__new_pbf", PROVENANCE: "__new_prov"}
    )


def pair_rows(todo: pl.DataFrame, expected: pl.DataFrame, ids: list[str]) -> tuple[pl.LazyFrame, bool]:
    """``todo``'s rows with the columns of their sample's ``expected`` row, and whether paired by position.

    Upstream rows are one per sample, so an inner join on the ids keeps each sample at most once and the
    samples without upstream rows are the difference. When both sides hold the same ids in the same order
    (tables written in id order, read bucket by bucket; checked here, column by column, which costs a
    comparison per row instead of hashing both sides) the rows are paired by position, which is that join.
    """
    if _same_ids(todo, expected, ids):
        # the columns picked by name: ``drop`` runs a query that first realigns the chunks of every column
        # (the hashed columns come out of the engine cut differently than the ids), ~30 ms per 1M rows
        extra = expected[[c for c in expected.columns if c not in ids]]
        return pl.concat([todo, extra], how="horizontal").lazy(), True
    return todo.lazy().join(expected.lazy(), on=ids, how="inner", nulls_equal=True), False


def _same_ids(left: pl.DataFrame, right: pl.DataFrame, ids: list[str]) -> bool:
    """Both frames hold the same ids in the same order (a comparison per row, no hashing)."""
    return left.height == right.height and all(
        left.get_column(c).equals(right.get_column(c), check_dtypes=True, check_names=False, null_equal=True)
        for c in ids
    )


def _default_dv() -> pl.Expr:
    """Rows whose data version is the default one (the provenance): it follows the new provenance."""
    return pl.col(DATA_VERSION) == pl.col(PROVENANCE)


def _carry_columns(joined: pl.LazyFrame) -> pl.LazyFrame:
    """Carried rows as input for :meth:`DeltaMetadataStore.stamp`: custom data versions survive."""
    default = _default_dv()
    return (
        joined.with_columns(
            pl.when(default)
            .then(pl.col("__new_pbf"))
            .otherwise(pl.col(DATA_VERSION_BY_FIELD))
            .alias(DATA_VERSION_BY_FIELD),
            pl.when(default)
            .then(pl.lit(None, dtype=pl.String))
            .otherwise(pl.col(DATA_VERSION))
            .alias(DATA_VERSION),
        )
        .drop(PROVENANCE, CREATED_AT, "__new_prov")
        .rename({"__new_pbf": PROVENANCE_BY_FIELD})
    )


def _lean_stamp_ok(schema: Mapping[str, pl.DataType], spec: FeatureSpec) -> bool:
    """The stored data-version struct has exactly the new fields, so no field needs re-deriving."""
    dvbf = schema.get(DATA_VERSION_BY_FIELD)
    return isinstance(dvbf, pl.Struct) and [f.name for f in dvbf.fields] == spec.field_names


def _stamp_carried(
    joined: pl.LazyFrame,
    spec: FeatureSpec,
    graph: FeatureGraph,
    write_id: str | None,
    snapshot_version: str,
    commit_order: int,
) -> pl.LazyFrame:
    """What ``_carry_columns`` + ``stamp`` produce, reusing the provenance hashes computed for the join.

    Hashing is most of a carry's CPU: the join already computed the new provenance (struct and combined
    hash), so only the data versions are set here, by the same rule (default data versions become the new
    provenance; custom ones are kept, with missing fields filled from it), and the store's stamping adds
    the versions, time and write id.
    """
    default = _default_dv()
    new_pbf = pl.col("__new_pbf")
    if DATA_VERSION_BY_FIELD in joined.collect_schema():
        custom = fill_data_versions(pl.col(DATA_VERSION_BY_FIELD), new_pbf, spec.field_names)
        dvbf = pl.when(default).then(new_pbf).otherwise(custom)
        dv = pl.when(default).then(pl.col("__new_prov")).otherwise(pl.col(DATA_VERSION))
    else:  # the caller checked: every row has the default data version
        dvbf, dv = new_pbf, pl.col("__new_prov")
    carried = (
        joined.with_columns(
            pl.col("__new_prov").alias(PROVENANCE),
            dvbf.alias(DATA_VERSION_BY_FIELD),
            dv.alias(DATA_VERSION),
        )
        .drop("__new_prov")
        .rename({"__new_pbf": PROVENANCE_BY_FIELD})
    )
    return stamp_versions(
        carried, spec, graph, write_id=write_id, snapshot_version=snapshot_version, commit_order=commit_order
    )


def carry_plan(
    store: DeltaMetadataStore, spec: FeatureSpec, *, old_graph: FeatureGraph, partition_rows: int
) -> Partitioning | None:
    """The buckets :func:`carry_over` would split ``spec``'s rows at the old version into (None: no table).

    Made once per step and handed to every unit, so units running at different times (other units' commits
    change the table's files) agree on which samples are whose. Unlike :func:`carry_over` alone, files not
    in id order keep hash buckets: a unit of a range plan takes one bucket and reads only its files, which
    only holds for clustered files (with sampled ranges every unit would read the whole table)."""
    pinned = store.scan_feature_at(spec.key)
    if pinned is None:
        return None
    ids = list(spec.id_columns)
    scan, table = pinned
    old_where = table_layout(table, ids, scan.collect_schema(), old_graph.feature_version(spec.key))
    return plan(old_where, ids, partition_rows)


# ------------------------------------------------------------------------------ what is left behind
def left_behind(
    store: DeltaMetadataStore,
    feature: FeatureKey,
    from_graph: FeatureGraph,
    to_graph: FeatureGraph,
    *,
    carried_upstreams: Collection[FeatureKey] = (),
) -> tuple[int, int] | None:
    """Samples of ``feature`` stored at its old version but not at its new one, as (could be carried over,
    need a recompute); None when the feature's version did not change between the graphs.

    A sample can be carried over when every upstream feature has a row for it at its new version.
    ``carried_upstreams`` are upstreams that an earlier step will carry over first (a dry run has not
    written them yet): their samples stored at the old version count as available.
    """
    if feature not in from_graph or feature not in to_graph:
        return None
    old_version, new_version = from_graph.feature_version(feature), to_graph.feature_version(feature)
    if old_version == new_version:
        return None
    spec = to_graph.spec(feature)
    ids = list(spec.id_columns)

    def stored_ids(key: FeatureKey, graph: FeatureGraph) -> pl.LazyFrame:
        return store.read_metadata(key, graph=graph, allow_missing=True).select(ids)

    lacking = stored_ids(feature, from_graph).join(
        stored_ids(feature, to_graph), on=ids, how="anti", nulls_equal=True
    )
    if not spec.deps:
        return 0, lacking.select(pl.len()).collect().item()
    carryable = lacking
    for dep in spec.deps:
        available = stored_ids(dep.feature, to_graph)
        if dep.feature in carried_upstreams:
            available = pl.concat([available, stored_ids(dep.feature, from_graph)]).unique()
        carryable = carryable.join(available, on=ids, how="semi", nulls_equal=True)
    total, rows = pl.collect_all([lacking.select(pl.len()), carryable.select(pl.len())])
    return rows.item(), total.item() - rows.item()


# ------------------------------------------------------------------------------ dry-run estimates
def pending_upstreams(ctx: OperationContext, feature: FeatureKey) -> list[FeatureKey]:
    """Upstreams this migration carries over too: in a dry run their new-version rows do not exist yet."""
    old_graph, new_graph = ctx.from_graph, ctx.to_graph
    assert old_graph is not None
    return [
        dep.feature
        for dep in new_graph.spec(feature).deps
        if dep.feature in ctx.affected
        and dep.feature in old_graph
        and new_graph.spec(dep.feature).deps
        and old_graph.feature_version(dep.feature) != new_graph.feature_version(dep.feature)
    ]


def estimate_after_upstreams(ctx: OperationContext, feature: FeatureKey) -> tuple[int, str]:
    """Dry-run (rows, note) for a feature whose upstreams are carried over earlier in the same migration.

    A plan writes nothing, so those upstreams have no rows at their new versions yet; counting against the
    store as it is would report 0. The estimate treats an upstream sample as available at its new version
    when it is stored at the old one and will be carried over, which is what the real apply does.
    """
    assert ctx.from_graph is not None
    pending = set(pending_upstreams(ctx, feature))
    counts = left_behind(ctx.store, feature, ctx.from_graph, ctx.to_graph, carried_upstreams=pending)
    rows, missing = counts if counts is not None else (0, 0)
    note = f"estimated: {', '.join(map(str, sorted(pending)))} carried over earlier in this migration"
    return rows, "; ".join(filter(None, [note, missing_note(feature, missing)]))


def missing_note(feature: FeatureKey, missing: int) -> str:
    """The step note for samples that could not be carried over (empty when there are none)."""
    if not missing:
        return ""
    return (
        f"{missing} sample(s) of {feature} have no upstream rows at the new version and were not carried "
        "over; recompute them"
    )
