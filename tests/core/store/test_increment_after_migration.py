"""``resolve_update`` right after a reconciliation: the files it wrote are cut into buckets too.

Reconciliation writes bulk files without row-group statistics (they cost ~12 % of the write), so readers can
skip those files only as wholes. The bulk writer therefore writes a frame in id order as several files of
at most ``bulk.FILE_ROWS`` rows with disjoint id ranges, and ``resolve_update`` cuts its buckets between
them (where the table's old and new rows chain into one cluster, at the range starts the fewest rows
straddle). Real Delta tables on disk, written and reconciled by the store; small sizes stand in for the
production ones (100-row row groups instead of 131,072, 200-row bulk files instead of 262,144). Every
bucketed result is compared with the single-query result of the same store.
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.migrations.reconcile import carry_over
from metaxy_core.store import _io, bulk, comparison, footers, increment
from metaxy_core.store.buckets import cut_plan, plan
from metaxy_core.store.layout import Layout
from metaxy_core.store.order import derived
from metaxy_core.store.provenance import COMMIT_ORDER, PROVENANCE_BY_FIELD
from metaxy_core.testing import increments
from metaxy_core.testing.numbered import numbered_emb_rows as emb_rows
from metaxy_core.testing.numbered import numbered_graph
from metaxy_core.testing.numbered import numbered_raw_rows as raw_rows

RAW, EMB = "mig/raw", "mig/emb"
IDS = ["uid"]


def graph(*, refined: bool) -> FeatureGraph:
    return numbered_graph(RAW, EMB, refined=refined)


@pytest.fixture
def small_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """100-row row groups for the store's writes and 200-row files for bulk appends."""
    monkeypatch.setattr(_io, "ROW_GROUP_ROWS", 100)
    monkeypatch.setattr(bulk, "FILE_ROWS", 200)


def reconciled(root: Path, n: int = 2000) -> DeltaMetadataStore:
    """``n`` samples written in id order (two commits per feature), then the downstream feature reconciled
    from the coarse lineage to the refined one (one bulk commit of ``n`` rows)."""
    old, new = graph(refined=False), graph(refined=True)
    store = DeltaMetadataStore(root, project="p")
    halves = [list(range(0, n // 2)), list(range(n // 2, n))]
    for part in halves:
        store.write_metadata(RAW, raw_rows(part), graph=old)
    for part in halves:
        store.write_metadata(EMB, emb_rows(part), graph=old)
    result = carry_over(
        store,
        new.spec(EMB),
        old_graph=old,
        new_graph=new,
        write_id="w1",
        snapshot_version=new.snapshot_version,
        partition_rows=10**6,
    )
    assert result.rows == n
    return store


def single_query(store: DeltaMetadataStore, new: FeatureGraph) -> tuple[pl.DataFrame, ...]:
    return increments.single_query(store, EMB, new, IDS)


def assert_same(got: object, expected: tuple[pl.DataFrame, ...]) -> None:
    increments.assert_same_increment(got, expected, IDS)


def range_buckets(store: DeltaMetadataStore) -> int:
    return increments.range_buckets(store.resolve_update(EMB, graph=graph(refined=True)).added.explain())


def test_a_reconciled_table_is_bucketed_between_its_bulk_files_with_the_single_query_result(
    tmp_path: Path, small_sizes: None
) -> None:
    """The reconciliation's 2,000 rows are 10 files of 200 rows without row-group statistics; the buckets
    of resolve_update right after it are cut between them (range buckets of at most 250 rows) and give
    exactly the single query's result: nothing to do."""
    store = reconciled(tmp_path / "s")
    actions = pl.DataFrame(DeltaTable(store.table_uri(EMB)).get_add_actions(flatten=True))
    carried = actions.filter(pl.col(f"min.{COMMIT_ORDER}") % 2 == 1)
    assert carried.get_column("num_records").to_list() == [200] * 10
    root = Path(store.table_uri(EMB).removeprefix("file://"))
    for path in carried.get_column("path"):
        groups = footers.row_groups(str(root / path), "uid")
        assert groups is not None and all(g.lo is None for g in groups)  # no row-group statistics
    new = graph(refined=True)
    expected = single_query(store, new)
    assert [f.height for f in expected] == [0, 0, 0]
    store.partition_rows = 500  # buckets of at most 250 rows
    assert range_buckets(store) >= 6
    assert_same(store.resolve_update(EMB, graph=new).collect(), expected)


def test_one_bulk_file_per_reconciliation_leaves_no_range_buckets(
    tmp_path: Path, small_sizes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the files are cut: one 2,000-row bulk file chains the table's old and new rows into one id range,
    and resolve_update falls back to hash buckets (a spill of both inputs); same result."""
    monkeypatch.setattr(bulk, "FILE_ROWS", 10**9)
    store = reconciled(tmp_path / "s")
    new = graph(refined=True)
    expected = single_query(store, new)
    store.partition_rows = 500
    assert range_buckets(store) == 0
    assert_same(store.resolve_update(EMB, graph=new).collect(), expected)


def test_rows_written_after_the_reconciliation_win_in_each_bucket(tmp_path: Path, small_sizes: None) -> None:
    """After the reconciliation, new upstream rows (changed samples), new samples (added), downstream rows
    written again at the old version (newer than the carried rows: changed) and downstream rows without
    upstream (removed): every bucket selects each sample's newest row as the single query does."""
    store = reconciled(tmp_path / "s")
    old = graph(refined=False)
    rewritten = raw_rows([5, 777, 1999, 2100, 2101]).with_columns(
        pl.col(PROVENANCE_BY_FIELD).struct.with_fields(pl.field("frames") + "-v2")
    )
    store.write_metadata(RAW, rewritten, graph=old)
    store.write_metadata(EMB, emb_rows([10, 1500], tag="again"), graph=old)
    gone = emb_rows([2200], provenance=True)
    store.write_metadata(EMB, gone, graph=graph(refined=True))
    new = graph(refined=True)
    expected = single_query(store, new)
    assert [f.height for f in expected] == [2, 5, 1]
    store.partition_rows = 500
    assert range_buckets(store) >= 6
    got = store.resolve_update(EMB, graph=new)
    assert_same(got.collect(), expected)
    for name, want in zip(("added", "changed", "removed"), expected, strict=True):
        assert getattr(got, name).collect().sort(IDS).equals(want), name


def test_bulk_files_are_cut_only_for_rows_in_id_order(tmp_path: Path, small_sizes: None) -> None:
    """Rows in id order, or in a few runs in id order over disjoint ranges (reconciliation's rows, one run
    per file it read): files of at most FILE_ROWS rows with disjoint ranges, each with its Delta-log
    statistics; rows not in id order, or with null ids, stay one file (overlapping files of one write would
    make readers look for repeated samples). Every row is readable either way."""
    store = DeltaMetadataStore(tmp_path / "s", project="p")
    store.write_metadata(EMB, emb_rows([0], provenance=True), graph=graph(refined=True))
    one = store.scan_feature(EMB).collect()  # a stored row, as the bulk path appends them
    uri = store.table_uri(EMB)

    def frame(numbers: list[int | None]) -> pl.DataFrame:
        return pl.concat([one] * len(numbers)).with_columns(
            pl.Series("uid", [None if i is None else f"{i:06d}" for i in numbers], dtype=pl.String),
            pl.lit(derived(0), dtype=pl.Int64).alias(COMMIT_ORDER),
        )

    def files_added(numbers: list[int | None]) -> pl.DataFrame:
        before = set(DeltaTable(uri).file_uris())
        bulk.append_frames(uri, [frame(numbers)], {}, ids=IDS)
        table = DeltaTable(uri)
        actions = pl.DataFrame(table.get_add_actions(flatten=True))
        return actions.filter(~pl.col("path").is_in([u.rsplit("/", 1)[-1] for u in before]))

    ordered = files_added(list(range(1000, 1450)))
    assert sorted(ordered.get_column("num_records").to_list()) == [50, 200, 200]
    ranges = ordered.sort("min.uid").select("min.uid", "max.uid").rows()
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    shuffled = list(range(2000, 2450))
    random.Random(1).shuffle(shuffled)
    assert files_added(shuffled).height == 1
    assert files_added([*range(3000, 3300), None]).height == 1
    runs = files_added([*range(4200, 4500), *range(4000, 4200)])
    assert sorted(runs.get_column("num_records").to_list()) == [100, 200, 200]
    assert store.scan_feature(EMB).select(pl.len()).collect().item() == 1 + 450 + 450 + 301 + 500


def test_cut_plan_cuts_two_generations_of_misaligned_ranges_within_the_read_bound() -> None:
    """Old rows in 131-row groups, new rows in 250-row files over the same 1,000 ids: every range overlaps
    the next, so plan() finds no cut between clusters (hash buckets); cut_plan cuts at the new files' starts
    (each straddled by one old group), buckets of at most twice partition_rows, rows read at most 1.5x."""
    old = [(lo, min(lo + 131, 1000) - 1, min(131, 1000 - lo)) for lo in range(0, 1000, 131)]
    new = [(lo, lo + 249, 250) for lo in range(0, 1000, 250)]
    ranges = pl.DataFrame(old + new, schema={"lo": pl.Int64, "hi": pl.Int64, "n": pl.Int64}, orient="row")
    where = Layout(2000, ranges, single_writes=True)
    assert plan(where, IDS, 300).mode == "hash"
    part = cut_plan(where, IDS, 300)
    assert part is not None and part.boundaries is not None
    assert set(part.boundaries.to_list()) <= {250, 500, 750, *range(0, 1000, 131)}
    assert where.read_rows(part.boundaries) <= 1.5 * where.rows
    edges = [None, *part.boundaries.to_list(), None]
    assert all(where.within(lo, hi).rows <= 2 * 300 + 262 for lo, hi in zip(edges, edges[1:], strict=False))
    # one range too big to cut: no plan
    big = pl.DataFrame([(0, 999, 1000), (0, 9, 10)], schema=ranges.schema, orient="row")
    assert cut_plan(Layout(1010, big), IDS, 100) is None


def test_a_bucket_of_one_generation_is_not_searched_for_repeats(
    tmp_path: Path, small_sizes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per bucket, the ranges decide whether samples can repeat: no count of distinct samples is made in
    a row-group plan (the pristine upstream never, the reconciled downstream's buckets select the newest
    row in place), and rows stay in id order so buckets still pair by position."""
    store = reconciled(tmp_path / "s")
    counted: list[object] = []
    monkeypatch.setattr(increment, "may_repeat", lambda *a, **k: counted.append(a) or True)
    paired: list[bool] = []
    original = comparison._paired
    monkeypatch.setattr(
        comparison, "_paired", lambda *a, **k: paired.append((out := original(*a, **k)) is not None) or out
    )
    store.partition_rows = 500
    store.resolve_update(EMB, graph=graph(refined=True)).collect()
    assert counted == []
    assert paired and all(paired)
