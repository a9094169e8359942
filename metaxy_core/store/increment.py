"""``resolve_update``: which samples of a feature are new, changed or gone, compared with what is stored.

The comparison itself (:func:`expected_rows`, then :mod:`.comparison`) works on frames it is given: the
expected provenance of the samples and the newest stored row of each sample. :func:`resolve_update` feeds
it the store's tables in one query, or, when an input is larger than the store's ``partition_rows``,
returns lazy frames that run the very same comparison once per bucket of samples
(:func:`bucketed_increment`), so memory follows the bucket size, never the table size. Buckets are cut
between Parquet row groups (smaller than files) when the footers show each bucket would read about its own
rows, and a bucket whose two sides hold the same ids in the same order pairs them by position instead of
joining them. What the Delta log proves spares reads: no stored row at the current feature version (every
stored sample changed: only the stored ids are read), every upstream row at the version read (no filter).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl
from polars.io.plugins import register_io_source

from metaxy_core.errors import MetadataSchemaError, MetaxyError
from metaxy_core.store import _io
from metaxy_core.store.base import FrameLike, Increment
from metaxy_core.store.buckets import Partitioning, SharedBuckets, cut_plan, plan
from metaxy_core.store.comparison import FRAMES, compare, compare_collected, stored_side
from metaxy_core.store.layout import (
    Layout,
    latest_per_sample,
    may_repeat,
    no_rows_at,
    only_rows_at,
    row_group_layout,
    table_layout,
)
from metaxy_core.store.order import rank
from metaxy_core.store.provenance import (
    COMMIT_ORDER,
    CREATED_AT,
    DATA_VERSION_BY_FIELD,
    FEATURE_VERSION,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    SYSTEM_COLUMNS,
    check_rows,
    combined_provenance,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from metaxy_core.graph.graph import FeatureGraph
    from metaxy_core.graph.keys import FeatureKey
    from metaxy_core.graph.spec import FeatureSpec
    from metaxy_core.store.delta import DeltaMetadataStore


def resolve_update(
    store: DeltaMetadataStore, spec: FeatureSpec, graph: FeatureGraph, samples: FrameLike | None
) -> Increment:
    """:meth:`DeltaMetadataStore.resolve_update` for ``spec``: bucketed for large inputs, else one query."""
    bucketed = bucketed_increment(store, spec, graph, samples)
    if bucketed is not None:
        return bucketed
    # A downstream feature's samples restrict every side of the comparison to their ids: only their upstream
    # rows are hashed and only their stored rows joined (not every sample of both tables).
    wanted = None
    if spec.deps and samples is not None and set(spec.id_columns) <= set(samples.collect_schema().names()):
        wanted = samples.lazy().select(spec.id_columns)
    expected = store.expected_provenance(spec, graph, samples=wanted) if spec.deps else None
    expected, requested_ids = expected_rows(spec, samples, expected)
    uri, options = store.table_uri(spec.key), store.storage_options
    before = _io.open_table(uri, options)
    stored = store.current_rows(spec, graph, any_version=True)
    current = graph.feature_version(spec.key)
    stale = before is not None and _log_proves(store, spec.key, before, lambda t: no_rows_at(t, current))
    if stale:  # the rows were read after ``before``: the proof holds if no commit landed since
        after = _io.open_table(uri, options)
        stale = after is not None and before is not None and after.version() == before.version()
    if stored is not None and wanted is not None:
        stored = stored.join(wanted, on=list(spec.id_columns), how="semi", nulls_equal=True)
    inc = compare(spec, graph, expected, requested_ids, stored, stale=stale)
    ids = list(spec.id_columns)

    def one_pass() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """The three frames from the expected and the stored rows, each collected once (narrow)."""
        if stored is None:
            return compare_collected(
                spec, graph, expected.collect(), requested_ids, None, expected_unique=False
            )
        expected_df, stored_df = pl.collect_all([expected, stored_side(stored, ids, stale)])
        unique = bool(spec.deps) and samples is None  # derived from upstream rows: one per sample
        return compare_collected(
            spec,
            graph,
            expected_df,
            requested_ids,
            stored_df,
            expected_unique=unique,
            stored_rows=stored,
            stale=stale,
        )

    return OnePassIncrement(added=inc.added, changed=inc.changed, removed=inc.removed, one_pass=one_pass)


def expected_rows(
    spec: FeatureSpec, samples: FrameLike | None, upstream_expected: pl.LazyFrame | None
) -> tuple[pl.LazyFrame, pl.LazyFrame | None]:
    """The samples to compare with their expected provenance, and the ids ``samples`` asked for (if any).

    A root feature's expected provenance is the one its ``samples`` bring; a downstream feature's is
    ``upstream_expected`` (from the upstream rows), restricted to ``samples``' ids when given, whose extra
    columns are carried along.

    Raises:
        MetaxyError: a root feature without ``samples``.
        MetadataSchemaError: ``samples`` lack id columns or bring a malformed provenance struct.
    """
    ids = list(spec.id_columns)
    if not spec.deps:
        if samples is None:
            raise MetaxyError(
                f"feature {spec.key} is a root feature: pass samples= with its id columns and "
                f"{PROVENANCE_BY_FIELD} (the root's provenance comes from its data, not from upstream)"
            )
        given = samples.lazy()
        check_rows(spec, given.collect_schema())
        expected = given.with_columns(
            pl.struct([pl.col(PROVENANCE_BY_FIELD).struct.field(f) for f in spec.field_names]).alias(
                PROVENANCE_BY_FIELD
            )
        ).with_columns(combined_provenance(PROVENANCE_BY_FIELD, spec.field_names).alias(PROVENANCE))
        return expected, None
    assert upstream_expected is not None
    if samples is None:
        return upstream_expected, None
    given = samples.lazy()
    missing = [c for c in ids if c not in given.collect_schema()]
    if missing:
        raise MetadataSchemaError(f"samples for feature {spec.key} lack id column(s) {missing}")
    keep = [c for c in given.collect_schema() if c not in SYSTEM_COLUMNS]
    expected = given.select(keep).join(upstream_expected, on=ids, how="inner", nulls_equal=True)
    return expected, given.select(ids)


def _log_proves(
    store: DeltaMetadataStore, key: FeatureKey, table: DeltaTable, check: Callable[[DeltaTable], bool]
) -> bool:
    """``check`` of ``table``'s Delta log (a fact of :mod:`~metaxy_core.store.layout`), with the store's
    errors. The caller makes sure ``table`` is the one its rows are read from (``scan_feature_at``)."""
    uri, options = store.table_uri(key), store.storage_options
    with _io.guard("read the log of", uri, options):
        return check(table)


def _ordering(schema: Mapping[str, pl.DataType]) -> list[str]:
    """The columns the newest-row selection orders by (the commit order, when the table has it)."""
    return [CREATED_AT, COMMIT_ORDER] if COMMIT_ORDER in schema else [CREATED_AT]


def _newest_in_place(lf: pl.LazyFrame, ids: list[str]) -> pl.LazyFrame:
    """:func:`latest_per_sample` (ties kept alike) as a filter, so the rows kept stay in their order.

    Why: a bucket of a table read in id order then still pairs with its expected rows by position
    (:func:`_paired`), where the semi-join's output order would force a join; one pass over the bucket.
    """
    ranked = rank(lf.collect_schema())
    return lf.filter(ranked == ranked.max().over(ids))


#: rows per bucket of a ``resolve_update`` whose inputs' row groups let buckets cut inside files: the three
#: collected frames (~120 bytes per row) stay, a bucket's working set (its rows decoded and hashed) goes
ROW_GROUP_BUCKET_ROWS = 262_144


def _row_group_plan(
    ids: list[str],
    inputs: list[tuple[str, FeatureKey | None, pl.LazyFrame, Layout | None]],
    tables: Mapping[str, tuple[DeltaTable, pl.Schema, str | None]],
    bucket_rows: int,
) -> tuple[Partitioning, list[tuple[str, FeatureKey | None, pl.LazyFrame, Layout | None]]] | None:
    """Id-range buckets of ``bucket_rows`` cut between Parquet row groups, when every input reads its own.

    Why: memory follows the rows a bucket decodes. Files written in id order hold many row groups of narrow
    id ranges (the store writes ``_io.ROW_GROUP_ROWS``-row groups), so buckets far smaller than a file read
    about their own rows, each input once (plus the row groups a cut falls into). Cuts fall between clusters
    of overlapping ranges (:func:`plan`), else at the range starts the fewest rows straddle
    (:func:`cut_plan`: a table right after a migration, whose old row groups and new bulk files of other
    sizes chain into one cluster). The inputs with their row-group layouts, for :class:`SharedBuckets`;
    None when some input would be read more than 1.5 times (files of one big row group, not in id order, or
    remote) or no range plan exists: the caller then plans by files, as before.
    """
    refined = []
    for name, key, lf, where in inputs:
        if where is not None and name in tables:
            table, schema, version = tables[name]
            where = row_group_layout(table, where, ids, schema, version)
        refined.append((name, key, lf, where))
    wheres = [where for _, _, _, where in refined if where is not None]
    if not wheres:
        return None
    biggest = max(wheres, key=lambda w: w.rows)
    # cuts between clusters of ranges first; else cuts that some ranges straddle (read twice, bounded)
    for part in (plan(biggest, ids, bucket_rows), cut_plan(biggest, ids, bucket_rows)):
        if part is not None and part.boundaries is not None and all(_reads_own(w, part) for w in wheres):
            return part, refined
    return None


def _reads_own(where: Layout, part: Partitioning) -> bool:
    """Whether reading ``where``'s rows bucket by bucket reads each about once (at most 1.5 times)."""
    assert part.boundaries is not None
    return where.ranges is not None and (
        not where.rows or where.read_rows(part.boundaries) <= 1.5 * where.rows
    )


#: one bucket in memory at a time, even when polars pulls several frames at once (``pl.collect_all``)
_BUCKET_LOCK = threading.Lock()


def bucketed_increment(
    store: DeltaMetadataStore,
    spec: FeatureSpec,
    graph: FeatureGraph,
    samples: FrameLike | None,
) -> Increment | None:
    """``resolve_update`` for large inputs, or None when they are small enough for a single query.

    Each of ``added``/``changed``/``removed`` is a lazy frame backed by a Python IO source: collecting (or
    sinking, counting...) it computes the increment one bucket of samples at a time with the regular
    single-query code on that bucket's rows, so memory follows the bucket size, never the table size.
    Projections, filters and ``head`` pushed down by polars are applied per bucket.
    """
    ids = list(spec.id_columns)
    # (input name, its feature: None for samples, the rows, what the Delta log says about them)
    inputs: list[tuple[str, FeatureKey | None, pl.LazyFrame, Layout | None]] = []
    # what the row-group plan needs of each table input: (its table, its schema, the feature version read)
    tables: dict[str, tuple[DeltaTable, pl.Schema, str | None]] = {}
    pinned = store.scan_feature_at(spec.key)
    current = graph.feature_version(spec.key)
    stale = pinned is not None and _log_proves(store, spec.key, pinned[1], lambda t: no_rows_at(t, current))
    whole: set[str] = set()  # upstream inputs whose every row is at the version read: no version filter
    if pinned is not None:
        scan, table = pinned
        schema = scan.collect_schema()
        narrow = [*ids, PROVENANCE_BY_FIELD, PROVENANCE, FEATURE_VERSION, *_ordering(schema)]
        inputs.append(("stored", spec.key, scan.select(narrow), table_layout(table, ids, schema, None)))
        tables["stored"] = (table, schema, None)
    for i, dep in enumerate(spec.deps):
        up_spec = graph.spec(dep.feature)
        up_pinned = store.scan_feature_at(up_spec.key)
        if up_pinned is None:
            return None  # the regular path raises the helpful "write the upstream first" error
        (up_scan, up_table), version = up_pinned, graph.feature_version(up_spec.key)
        if _log_proves(store, up_spec.key, up_table, lambda t, v=version: only_rows_at(t, v)):
            whole.add(f"up{i}")
        up_schema = up_scan.collect_schema()
        tables[f"up{i}"] = (up_table, up_schema, version)
        inputs.append(
            (
                f"up{i}",
                up_spec.key,
                up_scan.select([*ids, DATA_VERSION_BY_FIELD, FEATURE_VERSION, *_ordering(up_schema)]),
                table_layout(up_table, ids, up_schema, version),
            )
        )
    sample_rows = samples.height if isinstance(samples, pl.DataFrame) else 0
    sizes = [where.rows for _, _, _, where in inputs if where is not None] + [sample_rows]
    layouts = {name: where for name, _, _, where in inputs}  # files, for the one-row-per-sample proofs
    fine = max(1, min(store.partition_rows // 2, ROW_GROUP_BUCKET_ROWS))
    found = _row_group_plan(ids, inputs, tables, fine) if samples is None and max(sizes) > fine else None
    # row-group plans: each input's ranges, which tell per bucket whether its rows can repeat a sample
    fine_layouts: dict[str, Layout] = {}
    if found is not None:
        partitioning, inputs = found
        fine_layouts = {name: where for name, _, _, where in inputs if where is not None}
    else:
        if max(sizes) <= store.partition_rows:
            return None
        if samples is not None:
            inputs.append(("samples", None, samples.lazy(), None))
            layouts["samples"] = None
        biggest = max((where for _, _, _, where in inputs if where is not None), key=lambda w: w.rows)
        partitioning = plan(biggest, ids, max(1, store.partition_rows // 2))
    if partitioning.k == 1:
        return None

    def newest(
        frames: Mapping[str, pl.LazyFrame], name: str, key: FeatureKey, version: str | None, b: int | None
    ) -> pl.LazyFrame:
        """Bucket ``b``'s newest rows of ``key`` at ``version`` (any when None), as the store selects them."""
        lf = frames[name]
        if version is not None and name not in whole:
            lf = lf.filter(pl.col(FEATURE_VERSION) == version)
        key_ids = list(graph.spec(key).id_columns)
        # a bucket of rows the Delta log proves hold one row per sample holds one too: no count per bucket
        if layouts[name] is not None and not layouts[name].may_repeat:
            return lf
        if name in fine_layouts and partitioning.boundaries is not None:
            # The bucket's own ranges decide, without a count: e.g. right after a reconciliation every
            # sample has an old and a new row (overlapping ranges: select), a bucket of one write does not.
            edges = [None, *partitioning.boundaries.to_list(), None]
            if b is not None and not fine_layouts[name].within(edges[b], edges[b + 1]).may_repeat:
                return lf
            return _newest_in_place(lf, key_ids)
        if may_repeat(lf, key_ids, None, uri=store.table_uri(key), options=store.storage_options):
            lf = latest_per_sample(lf, key_ids)
        return lf

    def increment_of(frames: Mapping[str, pl.LazyFrame], b: int | None) -> Increment:
        """The single-query comparison over one bucket's rows (the same code as for whole tables)."""
        return compare(spec, graph, *comparison_inputs(frames, b), stale=stale)

    def comparison_inputs(
        frames: Mapping[str, pl.LazyFrame], b: int | None
    ) -> tuple[pl.LazyFrame, pl.LazyFrame | None, pl.LazyFrame | None]:
        """Bucket ``b``'s (expected rows, requested ids, newest stored rows), for :func:`compare`."""
        expected = None
        if spec.deps:
            upstream = {
                dep.feature: newest(frames, f"up{i}", dep.feature, graph.feature_version(dep.feature), b)
                for i, dep in enumerate(spec.deps)
            }
            expected = store.expected_provenance(spec, graph, upstream=upstream)
        expected, requested_ids = expected_rows(spec, frames.get("samples"), expected)
        stored = newest(frames, "stored", spec.key, None, b) if "stored" in frames else None
        return expected, requested_ids, stored

    # Output schemas, from the regular plan over empty inputs (nothing is read).
    template = increment_of({name: lf.head(0) for name, _, lf, _ in inputs}, None)
    shared = SharedBuckets(partitioning, [(name, lf, where) for name, _, lf, where in inputs])

    def frame(which: str) -> pl.LazyFrame:
        def source(
            with_columns: list[str] | None,
            predicate: pl.Expr | None,
            n_rows: int | None,
            batch_size: int | None,
        ) -> Iterator[pl.DataFrame]:
            produced = 0
            with _BUCKET_LOCK:
                buckets = shared.buckets()
            for b in range(partitioning.k):
                with _BUCKET_LOCK:
                    inc = increment_of({name: buckets.get(name, b) for name, _, _, _ in inputs}, b)
                    lf = getattr(inc, which).lazy()
                    if predicate is not None:
                        lf = lf.filter(predicate)
                    if with_columns is not None:
                        lf = lf.select(with_columns)
                    if n_rows is not None:
                        lf = lf.head(max(0, n_rows - produced))
                    df = lf.collect()
                if df.height:
                    produced += df.height
                    yield df
                if n_rows is not None and produced >= n_rows:
                    return

        schema = getattr(template, which).lazy().collect_schema()
        return register_io_source(
            source,
            schema=schema,
            explain_name=f"metaxy resolve_update {which}",
            explain_detail=f"{spec.key}, {partitioning.k} {partitioning.mode} buckets",
        )

    def one_pass() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """All three frames, each bucket's comparison computed once (polars shares its scans and joins)."""
        parts: dict[str, list[pl.DataFrame]] = {which: [] for which in FRAMES}
        with _BUCKET_LOCK:
            buckets = shared.buckets()
        for b in range(partitioning.k):
            with _BUCKET_LOCK:
                expected, requested_ids, stored = comparison_inputs(
                    {name: buckets.get(name, b) for name, _, _, _ in inputs}, b
                )
                if stored is None:
                    expected_df, stored_df = expected.collect(), None
                else:  # both sides read at once (the struct only for removed rows: see compare_collected)
                    expected_df, stored_df = pl.collect_all([expected, stored_side(stored, ids, stale)])
                got = compare_collected(
                    spec,
                    graph,
                    expected_df,
                    requested_ids,
                    stored_df,
                    expected_unique=bool(spec.deps) and samples is None,
                    stored_rows=stored,
                    stale=stale,
                )
                del expected_df, stored_df  # this bucket's inputs go before the next one is read
            for which, df in zip(FRAMES, got, strict=True):
                if df.height:
                    parts[which].append(df)
        added, changed, removed = (
            pl.concat(parts[which]) if parts[which] else getattr(template, which).lazy().collect()
            for which in FRAMES
        )
        return added, changed, removed

    return OnePassIncrement(
        added=frame("added"), changed=frame("changed"), removed=frame("removed"), one_pass=one_pass
    )


@dataclass(frozen=True)
class OnePassIncrement(Increment):
    """An increment whose :meth:`collect` computes the comparison once for its three frames.

    Each frame alone stays lazy (for a bucketed increment, an IO source that recomputes the comparison per
    bucket, so that counting or sinking one frame stays bounded); collecting the three separately would do
    that work three times, so ``collect`` runs one pass (per bucket) that yields the three frames together.
    """

    one_pass: Callable[[], tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]] | None = field(
        default=None, repr=False, compare=False
    )

    def collect(self) -> Increment:
        if self.one_pass is None:
            return super().collect()
        added, changed, removed = self.one_pass()
        return Increment(added=added, changed=changed, removed=removed)
