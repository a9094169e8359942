"""``resolve_update`` in buckets cut between Parquet row groups, rows paired by position, the footer reader.

Real Delta tables on disk, written by the store (whose files hold ``_io.ROW_GROUP_ROWS``-row groups; small
here so that tiny tables have many), by plain delta-rs, and by polars. Every bucketed result is compared with
the single-query result of the same store.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.store import _io, comparison, footers
from metaxy_core.store.layout import row_group_layout, table_layout
from metaxy_core.store.provenance import DATA_VERSION, DATA_VERSION_BY_FIELD, PROVENANCE_BY_FIELD
from metaxy_core.testing import increments
from metaxy_core.testing.numbered import numbered_emb_rows as emb_rows
from metaxy_core.testing.numbered import numbered_graph
from metaxy_core.testing.numbered import numbered_raw_rows as raw_rows
from metaxy_core.testing.s3 import S3Location

RAW, EMB = "rg/raw", "rg/emb"
IDS = ["uid"]


def graph(*, refined: bool) -> FeatureGraph:
    return numbered_graph(RAW, EMB, refined=refined)


@pytest.fixture
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store writes 100-row row groups (131,072 in production): 2,000-row tables get 20 of them."""
    monkeypatch.setattr(_io, "ROW_GROUP_ROWS", 100)


def build(
    root: Path | str,
    *,
    n: int = 2000,
    chunks: int = 2,
    mixed: bool = False,
    storage_options: dict[str, str] | None = None,
) -> DeltaMetadataStore:
    """``n`` samples written in id order, ``chunks`` commits per feature. ``mixed`` adds every kind of row a
    bucket can meet: samples without a stored row (added), stored rows without upstream (removed), a sample
    written twice (the newer row wins) and a custom data version."""
    old = graph(refined=False)
    store = DeltaMetadataStore(root, storage_options, project="p")
    parts = [list(range(c * n // chunks, (c + 1) * n // chunks)) for c in range(chunks)]
    for part in parts:
        store.write_metadata(RAW, raw_rows(part), graph=old)
    for part in parts:
        store.write_metadata(EMB, emb_rows([i for i in part if not (mixed and i % 50 == 3)]), graph=old)
    if mixed:
        gone = emb_rows([n + 1, n + 2], provenance=True)
        store.write_metadata(EMB, gone, graph=old)
        store.write_metadata(EMB, emb_rows([10, 1500], tag="again"), graph=old)
        custom = emb_rows([20]).with_columns(
            pl.struct(pl.lit("c1").alias("embedding"), pl.lit("c2").alias("sync")).alias(
                DATA_VERSION_BY_FIELD
            ),
            pl.lit("custom").alias(DATA_VERSION),
        )
        store.write_metadata(EMB, custom, graph=old)
    return store


def single_query(store: DeltaMetadataStore, new: FeatureGraph) -> tuple[pl.DataFrame, ...]:
    return increments.single_query(store, EMB, new, IDS)


def assert_same(got: object, expected: tuple[pl.DataFrame, ...]) -> None:
    increments.assert_same_increment(got, expected, IDS)


@pytest.fixture
def paired_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each comparison paired its rows by position (True) or fell back to the join (False)."""
    calls: list[bool] = []
    original = comparison._paired

    def spy(*args: object, **kwargs: object) -> object:
        out = original(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(out is not None)
        return out

    monkeypatch.setattr(comparison, "_paired", spy)
    return calls


def test_buckets_cut_between_row_groups_inside_files_and_pair_rows_by_position(
    tmp_path: Path, small_groups: None, paired_calls: list[bool]
) -> None:
    """Two files per table, twenty row groups: buckets of 250 rows are cut inside the files, every bucket
    pairs its rows by position (same ids, same order on both sides) and the result is the single query's."""
    store = build(tmp_path / "s")
    new = graph(refined=True)
    expected = single_query(store, new)
    assert (expected[0].height, expected[1].height, expected[2].height) == (0, 2000, 0)
    store.partition_rows = 500  # buckets of at most 250 rows
    inc = store.resolve_update(EMB, graph=new)
    k = increments.range_buckets(inc.added.explain())
    assert k >= 6  # files alone would allow 2
    paired_calls.clear()
    assert_same(inc.collect(), expected)
    assert paired_calls == [True] * k
    # each frame on its own (the IO source, one bucket at a time) gives the same rows
    assert inc.changed.collect().sort(IDS).equals(expected[1])
    assert inc.changed.filter(pl.col("uid") < "000300").collect().height == 300


def test_buckets_with_added_removed_repeated_and_custom_rows_join_and_equal_the_single_query(
    tmp_path: Path, small_groups: None, paired_calls: list[bool]
) -> None:
    """Buckets whose sides differ (samples added or removed, a sample stored twice, a custom data version)
    are joined, not paired; the union of all buckets is exactly the single query's result."""
    store = build(tmp_path / "s", mixed=True)
    new = graph(refined=True)
    expected = single_query(store, new)
    assert (expected[0].height, expected[1].height, expected[2].height) == (40, 1960, 2)
    store.partition_rows = 500
    inc = store.resolve_update(EMB, graph=new)
    assert increments.range_buckets(inc.added.explain()) >= 6
    paired_calls.clear()
    assert_same(inc.collect(), expected)
    assert False in paired_calls  # the differing buckets were joined
    for name, want in zip(("added", "changed", "removed"), expected, strict=True):
        assert getattr(inc, name).collect().sort(IDS).equals(want), name


def test_stored_rows_in_another_order_than_the_upstream_are_joined(
    tmp_path: Path, small_groups: None
) -> None:
    """Same ids, another order (the downstream written in descending id order): position pairing refuses,
    the join gives the single query's result."""
    old, new = graph(refined=False), graph(refined=True)
    store = DeltaMetadataStore(tmp_path / "s", project="p")
    store.write_metadata(RAW, raw_rows(list(range(1000))), graph=old)
    store.write_metadata(EMB, emb_rows(list(range(999, -1, -1))), graph=old)
    expected = single_query(store, new)
    store.partition_rows = 500
    assert_same(store.resolve_update(EMB, graph=new).collect(), expected)


def test_files_of_one_big_row_group_are_planned_by_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files written before this change (one row group per file): buckets are cut between files only (a cut
    inside a file would decode the whole file once per bucket), and smaller buckets than files fall back to
    hash buckets as before; the same result either way."""
    monkeypatch.setattr(_io, "ROW_GROUP_ROWS", 10**6)
    store = build(tmp_path / "s")
    new = graph(refined=True)
    expected = single_query(store, new)
    store.partition_rows = 2000  # buckets of 1,000 rows: one file each
    inc = store.resolve_update(EMB, graph=new)
    assert increments.range_buckets(inc.added.explain()) == 2
    assert_same(inc.collect(), expected)
    store.partition_rows = 500  # buckets of 250 rows: smaller than a file
    inc = store.resolve_update(EMB, graph=new)
    assert "8 hash buckets" in inc.added.explain()
    assert_same(inc.collect(), expected)


def test_a_table_on_s3_is_planned_by_files_with_the_single_query_result(
    s3: S3Location, small_groups: None
) -> None:
    """Footers are read for local tables only: on S3 the plan is the file plan (hash buckets when buckets are
    smaller than the files), never a failed local read, and the result is the single query's."""
    store = build(s3.root, storage_options=s3.storage_options, mixed=True)
    new = graph(refined=True)
    expected = single_query(store, new)
    store.partition_rows = 500
    inc = store.resolve_update(EMB, graph=new)
    assert "hash buckets" in inc.added.explain()
    assert_same(inc.collect(), expected)
    table = _io.open_table(store.table_uri(RAW), store.storage_options)
    assert table is not None
    schema = _io.scan_table(table, store.storage_options).collect_schema()
    files = table_layout(table, IDS, schema, None)
    assert row_group_layout(table, files, IDS, schema, None) is files


def test_row_group_layout_describes_each_row_group_and_keeps_files_it_cannot_read(
    tmp_path: Path, small_groups: None
) -> None:
    store = build(tmp_path / "s")
    table = DeltaTable(store.table_uri(RAW))
    schema = pl.scan_delta(table).collect_schema()
    files = table_layout(table, IDS, schema, None)
    groups = row_group_layout(table, files, IDS, schema, None)
    assert files.ranges is not None and files.ranges.height == 2
    assert groups.ranges is not None and groups.ranges.height == 20 and groups.rows == files.rows == 2000
    assert groups.ranges["n"].to_list() == [100] * 20
    assert not groups.ranges.sort("lo").select((pl.col("lo").shift(-1) <= pl.col("hi")).any()).item()
    # a file whose footer cannot be read keeps its file range (the plan only gets coarser)
    victim = Path(store.table_uri(RAW)) / table.get_add_actions(flatten=True).column("path")[0].as_py()
    data = victim.read_bytes()
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    victim.write_bytes(data[:start] + b"\xff" * 16 + data[start + 16 :])  # the footer's first bytes garbled
    damaged = row_group_layout(table, files, IDS, schema, None)
    assert damaged.ranges is not None and damaged.ranges.height == 11
    # composite ids, or an id type whose statistics could carry a sign bit: the file layout as it is
    assert row_group_layout(table, files, ["uid", "x"], schema, None) is files
    assert row_group_layout(table, files, IDS, {"uid": pl.UInt64}, None) is files


def test_row_group_layout_reads_the_footers_of_a_table_whose_path_needs_percent_encoding(
    tmp_path: Path,
) -> None:
    """delta-rs gives a local table's URI percent-encoded (``a%20dir``): the footers are still found."""
    from deltalake import WriterProperties, write_deltalake

    uri = tmp_path / "a dir" / "t"
    frame = pl.DataFrame({"uid": [f"{i:06d}" for i in range(1000)]})
    write_deltalake(uri, frame, writer_properties=WriterProperties(max_row_group_size=100))
    table = DeltaTable(uri)
    assert "%20" in table.table_uri
    files = table_layout(table, IDS, frame.schema, None)
    groups = row_group_layout(table, files, IDS, frame.schema, None)
    assert groups.ranges is not None and groups.ranges["n"].to_list() == [100] * 10


def test_files_the_store_writes_hold_row_groups_of_row_group_rows_and_read_anywhere(
    tmp_path: Path, small_groups: None
) -> None:
    """Row groups of ``ROW_GROUP_ROWS`` rows with statistics, LZ4 on a local disk, readable by plain
    delta-rs (pyarrow dataset) and polars."""
    store = build(tmp_path / "s", n=1000, chunks=1)
    table = DeltaTable(store.table_uri(RAW))
    (path,) = table.file_uris()
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [100] * 10
    assert meta.row_group(0).column(0).compression == "LZ4"  # pyarrow's name for Parquet's LZ4 codecs
    assert meta.row_group(0).column(0).statistics.has_min_max
    by_polars = pl.read_delta(store.table_uri(RAW)).sort("uid")
    by_delta_rs = pl.from_arrow(table.to_pyarrow_table()).sort("uid")
    assert by_polars.height == 1000 and by_polars.equals(by_delta_rs)


@pytest.mark.parametrize("writer", ["delta-rs", "polars", "polars without statistics"])
def test_the_footer_reader_agrees_with_pyarrow(tmp_path: Path, small_groups: None, writer: str) -> None:
    frame = pl.DataFrame({"n": list(range(1000)), "s": [f"x{i:05d}" for i in range(1000)], "f": [0.5] * 1000})
    path = tmp_path / "f.parquet"
    if writer == "delta-rs":
        store = build(tmp_path / "s", n=1000, chunks=1)
        (uri,) = DeltaTable(store.table_uri(RAW)).file_uris()
        path, columns = Path(uri.removeprefix("file://")), ["uid", PROVENANCE_BY_FIELD]
    else:
        frame.write_parquet(path, row_group_size=150, statistics=writer == "polars")
        columns = ["n", "s", "f", "missing"]
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    for column in columns:
        got = footers.row_groups(str(path), column)
        assert got is not None
        assert [g.rows for g in got] == [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        for i, g in enumerate(got):
            stats = meta.row_group(i).column(names.index(column)).statistics if column in names else None
            decodable = column in ("n", "s", "uid") and stats is not None and stats.has_min_max
            assert (g.lo, g.hi) == ((stats.min, stats.max) if decodable else (None, None)), (column, i)


def test_a_damaged_or_foreign_footer_is_unreadable_never_an_error(tmp_path: Path) -> None:
    """Truncated, bit-flipped and foreign files answer None (or row groups), never an exception: the planner
    then keeps the file range."""
    path = tmp_path / "f.parquet"
    pl.DataFrame({"s": [f"x{i:05d}" for i in range(500)]}).write_parquet(path, row_group_size=50)
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    footer_start = len(data) - 8 - length
    rng = random.Random(17)
    victim = tmp_path / "v.parquet"
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(footer_start, len(data) - 8)] = rng.randrange(256)
        victim.write_bytes(bytes(damaged))
        got = footers.row_groups(str(victim), "s")
        assert got is None or all(isinstance(g, footers.RowGroup) for g in got)
    for cut in (1, 9, 100, length // 2):
        victim.write_bytes(data[:footer_start] + data[footer_start + cut :])
        assert footers.row_groups(str(victim), "s") is None
    victim.write_bytes(b"not parquet at all")
    assert footers.row_groups(str(victim), "s") is None
    assert footers.row_groups(str(tmp_path / "missing.parquet"), "s") is None
    shutil.copy(path, victim)
    assert [g.rows for g in footers.row_groups(str(victim), "s") or []] == [50] * 10


def test_position_pairing_needs_the_same_ids_in_the_same_order() -> None:
    new = graph(refined=True)
    spec = new.spec(EMB)
    version = new.feature_version(EMB)
    struct = pl.Struct({"embedding": pl.String, "sync": pl.String})
    expected = pl.DataFrame(
        {
            "uid": ["a", None, "c"],
            PROVENANCE_BY_FIELD: [{"embedding": "e", "sync": "s"}] * 3,
            "metaxy_provenance": ["1", "2", "3"],
        },
        schema={"uid": pl.String, PROVENANCE_BY_FIELD: struct, "metaxy_provenance": pl.String},
    )
    stored = pl.DataFrame(
        {
            "uid": ["a", None, "c"],
            "metaxy_provenance": ["1", "x", "3"],
            "metaxy_feature_version": [version] * 3,
        }
    )
    none = comparison._none_removed(stored.schema, ["uid"], struct)
    added, changed, removed = comparison._paired(spec, new, expected, stored, none, False) or (None,) * 3
    assert changed is not None and changed["metaxy_provenance"].to_list() == ["2"]  # a null id pairs too
    assert added is not None and added.height == 0 and removed is not None and removed.height == 0
    assert removed.schema[PROVENANCE_BY_FIELD] == struct
    # no stored row at the current version (proven from the log): every paired row is changed
    _, every, _ = comparison._paired(spec, new, expected, stored.select("uid"), none, True) or (None,) * 3
    assert every is not None and every.equals(expected)
    swapped = stored.with_columns(pl.Series("uid", ["c", None, "a"]))
    for stale in (False, True):
        assert comparison._paired(spec, new, expected, swapped, none, stale) is None
        assert comparison._paired(spec, new, expected, stored.head(2), none, stale) is None
