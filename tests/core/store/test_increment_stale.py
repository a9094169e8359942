"""``resolve_update`` right after a feature's version changed reads the stored ids alone: the same frames.

When the Delta log's file statistics prove that no stored row of the feature is at its current feature version
(its code or lineage changed, nothing was recomputed yet), every stored sample that is expected is changed
whatever its stored provenance, so the comparison reads which samples are stored and not their provenance
and version strings. Upstream tables whose every row is at the version read skip the version filter. These
tests hold the shortcut to the full comparison (the proofs disabled) on every path (single query, buckets
paired by position, joined buckets, requested samples, each frame alone), check that rows written at the
current version turn it off, that a commit landing between the proof and the read voids the proof, and that
the proofs need exact statistics of every file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaxy_core import DeltaMetadataStore, FeatureGraph, MetaxyError
from metaxy_core.store import increment
from metaxy_core.store.layout import no_rows_at, only_rows_at
from metaxy_core.testing import S3Location
from metaxy_core.testing.increments import FRAMES
from metaxy_core.testing.numbered import (
    numbered_emb_rows,
    numbered_graph,
    numbered_ids,
    numbered_raw_rows,
    numbered_store,
)

RAW, EMB = "s/raw", "s/emb"
IDS = ["uid"]


def graph(*, refined: bool) -> FeatureGraph:
    return numbered_graph(RAW, EMB, refined=refined)


def build(root: Path, *, clustered: bool, n: int = 600, chunks: int = 6) -> DeltaMetadataStore:
    """``n`` samples in ``chunks`` commits (consecutive or interleaved ids); 12 have no embeddings row
    (added after the change) and 3 embeddings rows have no upstream row (removed)."""
    old = graph(refined=False)
    store = DeltaMetadataStore(root, project="s")
    numbered_store(store, RAW, EMB, old, clustered=clustered, n=n, chunks=chunks)
    store.write_metadata(EMB, numbered_emb_rows([900, 901, 902], provenance=True), graph=old)
    return store


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each proof that no stored row is at the current version answered."""
    seen: list[bool] = []

    def spy(table: DeltaTable, version: str) -> bool:
        seen.append(out := no_rows_at(table, version))
        return out

    monkeypatch.setattr(increment, "no_rows_at", spy)
    return seen


def resolved(
    store: DeltaMetadataStore, new: FeatureGraph, samples: pl.DataFrame | None
) -> tuple[tuple[pl.DataFrame, ...], tuple[pl.DataFrame, ...]]:
    """The three frames collected together, and each collected alone, sorted by id."""
    inc = store.resolve_update(EMB, graph=new, samples=samples)
    together = inc.collect()
    return (
        tuple(getattr(together, name).sort(IDS) for name in FRAMES),
        tuple(getattr(inc, name).collect().sort(IDS) for name in FRAMES),
    )


def full_comparison(
    monkeypatch: pytest.MonkeyPatch, run: Callable[[], tuple[tuple[pl.DataFrame, ...], ...]]
) -> tuple[tuple[pl.DataFrame, ...], ...]:
    """``run`` with the Delta-log proofs disabled: the stored provenance compared row by row."""
    with monkeypatch.context() as m:
        m.setattr(increment, "no_rows_at", lambda *_: False)
        m.setattr(increment, "only_rows_at", lambda *_: False)
        return run()


def assert_frames_equal(got: tuple[pl.DataFrame, ...], want: tuple[pl.DataFrame, ...]) -> None:
    for name, a, b in zip(FRAMES, got, want, strict=True):
        assert a.schema == b.schema, name
        assert a.equals(b), name


@pytest.mark.parametrize("clustered", [True, False], ids=["paired", "joined"])
@pytest.mark.parametrize("partition_rows", [10**9, 100], ids=["single-query", "buckets"])
@pytest.mark.parametrize("requested", [False, True], ids=["all", "samples"])
def test_after_a_version_change_the_stored_ids_alone_give_the_full_comparisons_frames(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answers: list[bool],
    clustered: bool,
    partition_rows: int,
    requested: bool,
) -> None:
    store = build(tmp_path / "s", clustered=clustered)
    store.partition_rows = partition_rows
    new = graph(refined=True)
    samples = numbered_ids(range(0, 1000, 3)).select(IDS) if requested else None
    together, alone = resolved(store, new, samples)
    assert answers and all(answers)  # the shortcut was taken
    want_together, want_alone = full_comparison(monkeypatch, lambda: resolved(store, new, samples))
    assert_frames_equal(together, want_together)
    assert_frames_equal(alone, want_alone)
    assert_frames_equal(alone, together)
    if not requested:
        assert tuple(f.height for f in together) == (12, 588, 3)
    else:  # ids 0, 3, ..., 999: 200 with upstream rows, 4 of them without embeddings, 901 removed
        assert tuple(f.height for f in together) == (4, 196, 1)


@pytest.mark.parametrize("partition_rows", [10**9, 100], ids=["single-query", "buckets"])
def test_rows_written_at_the_current_version_are_compared_by_their_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: list[bool], partition_rows: int
) -> None:
    """Samples recomputed after the change are not changed any more: the log no longer proves the shortcut,
    and the full comparison finds them unchanged."""
    store = build(tmp_path / "s", clustered=True)
    store.partition_rows = partition_rows
    new = graph(refined=True)
    store.write_metadata(EMB, numbered_emb_rows(range(100)), graph=new)
    together, alone = resolved(store, new, None)
    assert answers and not any(answers)
    assert_frames_equal(together, full_comparison(monkeypatch, lambda: resolved(store, new, None))[0])
    assert_frames_equal(alone, together)
    # samples 0-99 recomputed (2 of them were new): 10 still new, the other 490 changed
    assert tuple(f.height for f in together) == (10, 490, 3)
    assert together[1].filter(pl.col("uid") < "000100").height == 0


@pytest.mark.parametrize("racy", ["current_rows", "scan_feature_at"])
def test_a_commit_between_the_proof_and_the_read_voids_the_proof(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, racy: str
) -> None:
    """Another writer recomputes samples at the current version while ``resolve_update`` plans: the rows it
    reads include them, so nothing read from the log before that commit may be used. Neither the proof that
    no row is at the current version, nor the layout: it proved one row per sample, and the buckets compared
    each recomputed sample twice (its old row reported it changed: 98 of them before the fix)."""
    store = build(tmp_path / "s", clustered=True)
    store.partition_rows = 10**9 if racy == "current_rows" else 100
    new = graph(refined=True)
    other = DeltaMetadataStore(tmp_path / "s", project="s")
    read = getattr(store, racy)
    written: list[bool] = []

    def read_after_a_commit(*args: object, **kwargs: object) -> object:
        if not written and args and str(getattr(args[0], "key", args[0])) == EMB:
            written.append(True)
            other.write_metadata(EMB, numbered_emb_rows(range(100)), graph=new)
        return read(*args, **kwargs)

    monkeypatch.setattr(store, racy, read_after_a_commit)
    together = store.resolve_update(EMB, graph=new).collect()
    assert written
    assert together.changed.filter(pl.col("uid") < "000100").height == 0  # recomputed: not changed
    assert (together.added.height, together.changed.height) == (10, 490)


def _table(path: Path, frame: pl.DataFrame, **configuration: str) -> DeltaTable:
    write_deltalake(str(path), frame.to_arrow(), configuration=configuration or None)
    return DeltaTable(str(path))


def test_the_log_proves_versions_only_from_exact_statistics_of_every_file(tmp_path: Path) -> None:
    store = build(tmp_path / "s", clustered=True)
    old, new = graph(refined=False), graph(refined=True)
    emb, raw = DeltaTable(store.table_uri(EMB)), DeltaTable(store.table_uri(RAW))
    assert no_rows_at(emb, new.feature_version(EMB)) and not no_rows_at(emb, old.feature_version(EMB))
    assert only_rows_at(emb, old.feature_version(EMB)) and only_rows_at(raw, old.feature_version(RAW))
    assert not only_rows_at(emb, new.feature_version(EMB))
    store.write_metadata(EMB, numbered_emb_rows([1]), graph=new)
    emb = DeltaTable(store.table_uri(EMB))
    assert not no_rows_at(emb, new.feature_version(EMB)) and not only_rows_at(emb, old.feature_version(EMB))

    rows = pl.DataFrame({"uid": ["a", "b"], "metaxy_feature_version": ["v1", "v1"]})
    assert no_rows_at(_table(tmp_path / "exact", rows), "v2") and only_rows_at(
        _table(tmp_path / "e2", rows), "v1"
    )
    # statistics of the first column only: the version is unknown
    blind = _table(tmp_path / "blind", rows, **{"delta.dataSkippingNumIndexedCols": "1"})
    assert not no_rows_at(blind, "v2") and not only_rows_at(blind, "v1")
    # versions long enough for a writer to truncate their statistics are not reasoned with
    long = "v" * 40
    truncated = _table(tmp_path / "long", rows.with_columns(pl.lit(long).alias("metaxy_feature_version")))
    assert not no_rows_at(truncated, "w") and not only_rows_at(truncated, long)
    # a file without rows proves nothing either way; a table without rows holds none at any version
    empty = _table(tmp_path / "empty", rows.head(0))
    assert no_rows_at(empty, "v1") and not only_rows_at(empty, "v1")


def raw_bumped() -> FeatureGraph:
    """The refined graph with a new code version of the raw feature's frames: a new raw feature version."""
    return numbered_graph(RAW, EMB, refined=True, frames_version="2")


def test_upstream_rows_all_at_the_version_read_are_not_filtered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket's upstream read has no version filter when the log proves every row is at that version, and
    keeps it when the upstream table also holds another version's rows."""
    store = build(tmp_path / "s", clustered=True)
    store.partition_rows = 100
    proofs: list[bool] = []

    def spy(table: DeltaTable, version: str) -> bool:
        proofs.append(out := only_rows_at(table, version))
        return out

    monkeypatch.setattr(increment, "only_rows_at", spy)
    assert tuple(f.height for f in resolved(store, graph(refined=True), None)[0]) == (12, 588, 3)
    assert proofs and all(proofs)
    bumped = raw_bumped()
    store.write_metadata(RAW, numbered_raw_rows(range(0, 600, 2)), graph=bumped)  # even samples again
    proofs.clear()
    together, alone = resolved(store, bumped, None)
    assert proofs and not any(proofs)
    assert_frames_equal(together, full_comparison(monkeypatch, lambda: resolved(store, bumped, None))[0])
    assert_frames_equal(alone, together)
    # only the 300 recomputed raw rows are upstream rows at the new version: the odd samples are removed
    assert tuple(f.height for f in together) == (0, 300, 291)


def test_the_shortcut_holds_on_s3(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch, answers: list[bool]
) -> None:
    """The statistics delta-rs records on S3 prove the same: the stored ids alone, the full comparison's
    frames (single query and buckets cut between files)."""
    store = DeltaMetadataStore(s3.root, s3.storage_options, project="s")
    old, new = graph(refined=False), graph(refined=True)
    for c in range(3):
        store.write_metadata(RAW, numbered_raw_rows(range(c * 40, c * 40 + 40)), graph=old)
        store.write_metadata(EMB, numbered_emb_rows(range(c * 40 + 1, c * 40 + 40)), graph=old)
    for partition_rows in (10**9, 40):
        store.partition_rows = partition_rows
        answers.clear()
        together, alone = resolved(store, new, None)
        assert answers and all(answers)
        assert_frames_equal(together, full_comparison(monkeypatch, lambda: resolved(store, new, None))[0])
        assert_frames_equal(alone, together)
        assert tuple(f.height for f in together) == (3, 117, 0)
        bucketed = "metaxy resolve_update" in store.resolve_update(EMB, graph=new).added.explain()
        assert bucketed == (partition_rows == 40)


#: a store's history: per step, which feature is written under which graph for which samples
steps = st.lists(
    st.tuples(
        st.sampled_from(["raw-old", "raw-bumped", "emb-old", "emb-new", "emb-bumped"]),
        st.lists(st.integers(0, 59), min_size=1, max_size=30, unique=True),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(history=steps, partition_rows=st.sampled_from([10**9, 16]), order=st.booleans())
def test_any_history_gives_the_full_comparisons_frames(
    tmp_path_factory: pytest.TempPathFactory,
    history: list[tuple[str, list[int]]],
    partition_rows: int,
    order: bool,
) -> None:
    """Whatever was written at which version (roots and downstream rows at old, current and newer versions,
    samples repeated, upstream rows missing), ``resolve_update`` under each graph equals the comparison with
    every proof disabled, collected together and frame by frame."""
    store = DeltaMetadataStore(tmp_path_factory.mktemp("h") / "s", project="s")
    graphs = {"old": graph(refined=False), "new": graph(refined=True), "bumped": raw_bumped()}
    store.write_metadata(RAW, numbered_raw_rows(range(60)), graph=graphs["old"])
    for what, numbers in history:
        feature, version = what.split("-")
        chosen = sorted(numbers) if order else numbers
        if feature == "raw":
            store.write_metadata(RAW, numbered_raw_rows(chosen), graph=graphs[version])
        else:  # downstream rows need upstream rows at that graph's version: those samples of the chosen
            have = set(store.read_metadata(RAW, graph=graphs[version]).collect()["uid"].to_list())
            rows = [i for i in chosen if f"{i:06d}" in have]
            if rows:
                store.write_metadata(EMB, numbered_emb_rows(rows), graph=graphs[version])
    store.partition_rows = partition_rows
    with pytest.MonkeyPatch.context() as monkeypatch:
        for g in graphs.values():
            try:
                got = resolved(store, g, None)
            except MetaxyError:  # e.g. no upstream rows at that graph's version: both must refuse alike
                with pytest.raises(MetaxyError):
                    full_comparison(monkeypatch, lambda g=g: resolved(store, g, None))
                continue
            want = full_comparison(monkeypatch, lambda g=g: resolved(store, g, None))
            assert_frames_equal(got[0], want[0])
            assert_frames_equal(got[1], want[1])
