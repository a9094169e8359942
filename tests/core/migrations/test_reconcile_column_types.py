"""Reconciliation keeps every user column as it was, whatever its type, and works on composite ids.

A downstream feature keyed by (clip, frame) with user columns of the types pipelines store (lists, structs,
decimals, binary, booleans, time-zoned nanosecond datetimes, dates, floats with NaN, nulls everywhere) is
carried to a new feature version in one bucket and in several hash buckets (composite ids have no id-range
plan), over clustered and interleaved files and with the units' fixed plan: every carried row's user columns
equal its old row's.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.graph import FeatureDep, FeatureGraph, FeatureSpec, FieldSpec
from metaxy_core.migrations.reconcile import carry_over, carry_plan
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD

RAW, CLIPS = "t/raw", "t/clip_stats"
IDS = ["clip", "frame"]
N, CHUNKS = 240, 4
USER = ["tags", "box", "price", "blob", "flag", "seen_at", "day", "score", "note"]


def graph(code: str) -> FeatureGraph:
    g = FeatureGraph()
    g.add(FeatureSpec(key=RAW, id_columns=IDS, fields=[FieldSpec(key="x", code_version="1")]))
    g.add(
        FeatureSpec(
            key=CLIPS,
            id_columns=IDS,
            deps=[FeatureDep(feature=RAW)],
            fields=[FieldSpec(key="y", code_version=code)],
        )
    )
    return g


def samples(chunk: int, interleaved: bool) -> pl.DataFrame:
    """One commit's samples: consecutive (files clustered on the ids) or every CHUNKS-th one."""
    n = N // CHUNKS
    i = (
        pl.int_range(chunk, N, CHUNKS, eager=True)
        if interleaved
        else pl.int_range(chunk * n, (chunk + 1) * n, eager=True)
    ).alias("i")
    return i.to_frame().select(
        pl.format("c{}", (pl.col("i") // 10).cast(pl.String).str.zfill(3)).alias("clip"),
        (pl.col("i") % 10).cast(pl.Int32).alias("frame"),
        pl.col("i"),
    )


def user_columns(ids: pl.DataFrame) -> pl.DataFrame:
    """Values of every type, with nulls in every column (every 7th row) and NaN in the floats."""
    i = ids["i"]
    n = len(i)
    null = [k % 7 == 3 for k in i.to_list()]

    def nulled(values: list[object]) -> list[object]:
        return [None if gone else v for v, gone in zip(values, null, strict=True)]

    paris = "Europe/Paris"
    return ids.select(IDS).with_columns(
        pl.Series("tags", nulled([[f"t{k}", "x"] if k % 2 else [] for k in i]), dtype=pl.List(pl.String)),
        pl.Series("box", nulled([{"w": k, "label": f"b{k}"} for k in i])),
        pl.Series("price", nulled([Decimal(f"{k}.25") for k in i]), dtype=pl.Decimal(10, 2)),
        pl.Series("blob", nulled([bytes([k % 256, 0, 255]) for k in i]), dtype=pl.Binary),
        pl.Series("flag", nulled([k % 3 == 0 for k in i]), dtype=pl.Boolean),
        pl.Series(
            "seen_at",
            nulled([dt.datetime(2026, 3, 29, 1, 59, 59, 123456) + dt.timedelta(minutes=k) for k in i]),
            dtype=pl.Datetime("us"),
        )
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(paris),
        pl.Series("day", nulled([dt.date(2000, 1, 1) + dt.timedelta(days=k) for k in i]), dtype=pl.Date),
        pl.Series("score", nulled([float("nan") if k % 5 == 0 else k / 3 for k in i]), dtype=pl.Float64),
        pl.Series("note", [None] * n, dtype=pl.String),
    )


def build(root: Path, *, interleaved: bool) -> DeltaMetadataStore:
    store = DeltaMetadataStore(root, project="p")
    old = graph("1")
    for chunk in range(CHUNKS):
        ids = samples(chunk, interleaved)
        raw = ids.select(*IDS, pl.struct(pl.format("x{}", "i").alias("x")).alias(PROVENANCE_BY_FIELD))
        store.write_metadata(RAW, raw, graph=old)
    for chunk in range(CHUNKS):
        store.write_metadata(CLIPS, user_columns(samples(chunk, interleaved)), graph=old)
    return store


def user_view(store: DeltaMetadataStore, g: FeatureGraph) -> pl.DataFrame:
    return store.read_metadata(CLIPS, graph=g).collect().select(*IDS, *USER).sort(IDS)


@pytest.mark.parametrize(
    ("interleaved", "partition_rows", "hash_plan"),
    [(False, 10**6, False), (False, 60, False), (True, 60, False), (True, 60, True)],
    ids=["one-bucket", "clustered", "interleaved", "units-plan"],
)
def test_every_user_column_type_is_carried_unchanged_on_composite_ids(
    tmp_path: Path, interleaved: bool, partition_rows: int, hash_plan: bool
) -> None:
    store = build(tmp_path / "store", interleaved=interleaved)
    old, new = graph("1"), graph("2")
    before = user_view(store, old)
    assert before.height == N and before["note"].null_count() == N
    plan = carry_plan(store, new.spec(CLIPS), old_graph=old, partition_rows=partition_rows)
    result = carry_over(
        store,
        new.spec(CLIPS),
        old_graph=old,
        new_graph=new,
        write_id="carry",
        snapshot_version=new.snapshot_version,
        partition_rows=partition_rows,
        partitioning=plan if hash_plan else None,
    )
    assert result.rows == N and result.missing == 0
    # composite ids: no id ranges (they cut on one id column), so several buckets are hash buckets, spilled
    several = partition_rows < N
    assert result.mode == ("hash" if several else "single") and (result.buckets >= 3 if several else True)
    assert bool(result.spilled) == several
    after = user_view(store, new)
    assert after.schema == before.schema
    assert after.equals(before)  # NaN equals NaN and null equals null here: every value kept
