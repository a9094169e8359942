"""DeltaMetadataStore on real Delta tables in tmp_path: writes, reads, resolve_update, errors and
snapshots."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import polars as pl
import pytest

from metaxy_core import (
    SYSTEM_COLUMNS,
    DeltaMetadataStore,
    Feature,
    FeatureDep,
    FeatureGraph,
    FeatureSpec,
    FieldDep,
    FieldSpec,
)
from metaxy_core.errors import (
    FeatureNotFoundError,
    MetadataSchemaError,
    MetaxyError,
    SnapshotNotFoundError,
    StoreError,
)
from metaxy_core.store import MetadataNotFoundError
from metaxy_core.store.provenance import (
    CREATED_AT,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    FEATURE_VERSION,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    SNAPSHOT_VERSION,
)
from metaxy_core.testing import VideoFeatures, video_features
from metaxy_core.testing import video_raw_rows as raw_rows

RAW, EMB = "video/raw", "video/embeddings"


def declare(**versions: str) -> VideoFeatures:
    """video/raw (frames, audio) -> video/embeddings (embedding <- frames, transcript <- audio).

    From metaxy_core.testing; the graph is not activated.
    """
    return video_features(transcript="1", **versions)


def ids(frame: pl.DataFrame | pl.LazyFrame) -> list[int]:
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    return sorted(df["sample_uid"].to_list())


@pytest.fixture
def v() -> VideoFeatures:
    return declare()


@pytest.fixture
def seeded(store: DeltaMetadataStore, v: VideoFeatures) -> DeltaMetadataStore:
    """Raw rows 1..3 and their embeddings, all up to date."""
    store.write_metadata(v.Raw, raw_rows([1, 2, 3]), graph=v.graph)
    added = store.resolve_update(v.Emb, graph=v.graph).collect().added
    store.write_metadata(v.Emb, added.with_columns(dim=pl.lit(512)), graph=v.graph)
    return store


# -------------------------------------------------------------------------------------- write and read
def test_written_rows_read_back_with_user_and_system_columns(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    assert store.write_metadata(v.Raw, raw_rows([1, 2, 3]), graph=v.graph) == 3
    df = store.read_metadata(v.Raw, graph=v.graph).collect().sort("sample_uid")

    assert df.columns == ["sample_uid", "path", *SYSTEM_COLUMNS]
    assert df["path"].to_list() == ["s3://videos/1.mp4", "s3://videos/2.mp4", "s3://videos/3.mp4"]
    assert df[PROVENANCE_BY_FIELD].to_list()[0] == {"frames": "f1", "audio": "a1"}
    assert set(df[FEATURE_VERSION]) == {v.graph.feature_version(v.Raw)}
    assert set(df[SNAPSHOT_VERSION]) == {v.graph.snapshot_version}
    assert df[CREATED_AT].dtype == pl.Datetime("us", "UTC")
    assert df[CREATED_AT][0].tzinfo is not None and df[CREATED_AT][0].utcoffset() == UTC.utcoffset(None)
    assert df[DATA_VERSION_BY_FIELD].to_list() == df[PROVENANCE_BY_FIELD].to_list()  # defaults to provenance
    assert df[DATA_VERSION].to_list() == df[PROVENANCE].to_list()


def test_feature_can_be_given_as_class_key_or_string(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    store.write_metadata(RAW, raw_rows([1]), graph=v.graph)
    store.write_metadata(v.Raw.spec.key, raw_rows([2]), graph=v.graph)
    with v.graph.use():  # the active graph is the default
        store.write_metadata(v.Raw, raw_rows([3]))
        assert ids(store.read_metadata(["video", "raw"])) == [1, 2, 3]


def test_read_returns_the_latest_row_per_sample(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    store.write_metadata(v.Raw, raw_rows([1, 2, 3]), graph=v.graph)
    store.write_metadata(v.Raw, raw_rows([2], frames="g", path=["s3://videos/2-fixed.mp4"]), graph=v.graph)

    latest = store.read_metadata(v.Raw, graph=v.graph).collect().sort("sample_uid")
    assert latest["path"].to_list() == ["s3://videos/1.mp4", "s3://videos/2-fixed.mp4", "s3://videos/3.mp4"]
    assert latest[PROVENANCE_BY_FIELD].to_list()[1] == {"frames": "g2", "audio": "a2"}
    assert store.read_metadata(v.Raw, graph=v.graph, include_history=True).collect().height == 4


def test_filters_apply_to_the_latest_rows_and_never_resurrect_an_old_one(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    store.write_metadata(v.Raw, raw_rows([1, 2], path=["old", "old"]), graph=v.graph)
    store.write_metadata(v.Raw, raw_rows([1], path=["new"]), graph=v.graph)

    assert ids(store.read_metadata(v.Raw, graph=v.graph, filters=pl.col("path") == "old")) == [2]
    assert ids(
        store.read_metadata(v.Raw, graph=v.graph, filters=[pl.col("path") == "new", pl.col("sample_uid") > 0])
    ) == [1]
    history = store.read_metadata(v.Raw, graph=v.graph, include_history=True, filters=pl.col("path") == "old")
    assert ids(history) == [1, 2]


def test_columns_projects_and_always_keeps_the_id_columns(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    store.write_metadata(v.Raw, raw_rows([1, 2]), graph=v.graph)
    df = store.read_metadata(v.Raw, graph=v.graph, columns=["path", PROVENANCE]).collect()
    assert df.columns == ["sample_uid", "path", PROVENANCE]


def test_read_sees_only_the_current_feature_version_unless_asked(store: DeltaMetadataStore) -> None:
    v1, v2 = declare(frames="1"), declare(frames="2")
    store.write_metadata(RAW, raw_rows([1, 2, 3]), graph=v1.graph)
    store.write_metadata(RAW, raw_rows([1]), graph=v2.graph)

    assert ids(store.read_metadata(RAW, graph=v2.graph)) == [1]
    assert ids(store.read_metadata(RAW, graph=v1.graph)) == [1, 2, 3]
    old = store.read_metadata(RAW, graph=v2.graph, feature_version=v1.graph.feature_version(RAW)).collect()
    assert ids(old) == [1, 2, 3] and set(old[FEATURE_VERSION]) == {v1.graph.feature_version(RAW)}
    history = store.read_metadata(RAW, graph=v2.graph, include_history=True).collect()
    assert history.height == 4
    assert set(history[FEATURE_VERSION]) == {v1.graph.feature_version(RAW), v2.graph.feature_version(RAW)}


def test_store_is_a_context_manager_and_does_no_io_until_used(tmp_path: Path, v: VideoFeatures) -> None:
    root = tmp_path / "lazy" / "store"
    with DeltaMetadataStore(root, {"some_option": "secret-value"}) as store:
        assert not root.exists()
        assert repr(store) == f"DeltaMetadataStore({str(root)!r}, project='default')"
        assert store.has_metadata(v.Raw) is False
        assert store.table_version(v.Raw) is None
        store.write_metadata(v.Raw, raw_rows([1]), graph=v.graph)
        assert (root / "video__raw" / "_delta_log").is_dir()
        assert store.has_metadata(v.Raw) is True
        assert store.table_version(v.Raw) == 0


def test_writing_no_rows_writes_nothing(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    assert store.write_metadata(v.Raw, raw_rows([1]).head(0), graph=v.graph) == 0
    assert store.has_metadata(v.Raw) is False


def test_a_writer_supplied_data_version_stops_propagation(
    seeded: DeltaMetadataStore, v: VideoFeatures
) -> None:
    # sample 1 recomputed: new provenance (say the decoder changed) but identical data
    rows = raw_rows([1], frames="recomputed-f", audio="recomputed-a").with_columns(
        pl.struct(frames=pl.lit("f1"), audio=pl.lit("a1")).alias(DATA_VERSION_BY_FIELD)
    )
    seeded.write_metadata(v.Raw, rows, graph=v.graph)
    stored = seeded.read_metadata(v.Raw, graph=v.graph, filters=pl.col("sample_uid") == 1).collect()
    assert stored[PROVENANCE_BY_FIELD].to_list() == [{"frames": "recomputed-f1", "audio": "recomputed-a1"}]
    assert stored[DATA_VERSION_BY_FIELD].to_list() == [{"frames": "f1", "audio": "a1"}]
    assert seeded.resolve_update(v.Emb, graph=v.graph).counts() == {"added": 0, "changed": 0, "removed": 0}


# ----------------------------------------------------------------------------------------- resolve_update
def test_downstream_samples_are_added_then_up_to_date(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    store.write_metadata(v.Raw, raw_rows([1, 2, 3]), graph=v.graph)
    increment = store.resolve_update(v.Emb, graph=v.graph).collect()
    assert ids(increment.added) == [1, 2, 3]
    assert increment.added.columns == ["sample_uid", PROVENANCE_BY_FIELD, PROVENANCE]
    assert increment.changed.height == 0 and increment.removed.height == 0
    assert increment.removed.columns == ["sample_uid", PROVENANCE_BY_FIELD, PROVENANCE]

    store.write_metadata(v.Emb, increment.added.with_columns(dim=pl.lit(512)), graph=v.graph)
    assert store.resolve_update(v.Emb, graph=v.graph).counts() == {"added": 0, "changed": 0, "removed": 0}
    stored = store.read_metadata(v.Emb, graph=v.graph).collect()
    assert stored["dim"].to_list() == [512, 512, 512]  # user columns are kept
    assert sorted(stored[PROVENANCE].to_list()) == sorted(increment.added[PROVENANCE].to_list())


def test_downstream_write_without_provenance_computes_the_same_provenance(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    store.write_metadata(v.Raw, raw_rows([1, 2]), graph=v.graph)
    expected = store.resolve_update(v.Emb, graph=v.graph).collect().added.sort("sample_uid")
    store.write_metadata(v.Emb, pl.DataFrame({"sample_uid": [2, 1], "dim": [8, 8]}), graph=v.graph)
    stored = store.read_metadata(v.Emb, graph=v.graph).collect().sort("sample_uid")
    assert stored[PROVENANCE_BY_FIELD].to_list() == expected[PROVENANCE_BY_FIELD].to_list()
    assert stored[PROVENANCE].to_list() == expected[PROVENANCE].to_list()


def test_changing_an_upstream_field_changes_only_the_downstream_fields_that_use_it(
    seeded: DeltaMetadataStore, v: VideoFeatures
) -> None:
    before = seeded.read_metadata(v.Emb, graph=v.graph).collect().sort("sample_uid")
    seeded.write_metadata(v.Raw, raw_rows([2], audio="new-audio-"), graph=v.graph)  # only audio changed

    changed = seeded.resolve_update(v.Emb, graph=v.graph).collect().changed
    assert ids(changed) == [2]
    old = before.filter(pl.col("sample_uid") == 2)[PROVENANCE_BY_FIELD].to_list()[0]
    new = changed[PROVENANCE_BY_FIELD].to_list()[0]
    assert new["embedding"] == old["embedding"]  # embedding depends on frames only
    assert new["transcript"] != old["transcript"]


def test_an_upstream_change_to_an_unused_field_leaves_the_downstream_up_to_date(
    store: DeltaMetadataStore,
) -> None:
    graph = FeatureGraph()
    with graph.use():

        class Raw(
            Feature, spec=FeatureSpec(key="raw", fields=[FieldSpec(key="frames"), FieldSpec(key="audio")])
        ):
            pass

        class Visual(
            Feature,
            spec=FeatureSpec(
                key="visual",
                deps=[FeatureDep(feature=Raw)],
                fields=[FieldSpec(key="embedding", deps=[FieldDep(feature=Raw, fields=["frames"])])],
            ),
        ):
            pass

    rows = lambda audio: pl.DataFrame(  # noqa: E731
        {
            "sample_uid": [1, 2],
            PROVENANCE_BY_FIELD: [{"frames": "f1", "audio": audio}, {"frames": "f2", "audio": "a2"}],
        }
    )
    store.write_metadata(Raw, rows("a1"), graph=graph)
    store.write_metadata(Visual, store.resolve_update(Visual, graph=graph).collect().added, graph=graph)
    store.write_metadata(Raw, rows("a1-remastered"), graph=graph)

    assert store.resolve_update(Visual, graph=graph).counts() == {"added": 0, "changed": 0, "removed": 0}


def test_root_samples_are_added_changed_and_removed(seeded: DeltaMetadataStore, v: VideoFeatures) -> None:
    samples = pl.concat(
        [
            raw_rows([2], frames="edited-"),  # changed content
            raw_rows([3]),  # unchanged
            raw_rows([4]),  # new
        ]
    ).with_columns(batch=pl.lit("b7"))
    increment = seeded.resolve_update(v.Raw, samples=samples, graph=v.graph).collect()

    assert (ids(increment.added), ids(increment.changed), ids(increment.removed)) == ([4], [2], [1])
    assert increment.added["batch"].to_list() == ["b7"]  # the samples' own columns are carried
    assert increment.changed["path"].to_list() == ["s3://videos/2.mp4"]
    assert increment.removed[PROVENANCE_BY_FIELD].to_list() == [{"frames": "f1", "audio": "a1"}]


def test_downstream_samples_whose_upstream_rows_are_gone_are_removed(seeded: DeltaMetadataStore) -> None:
    bumped = declare(audio="2")  # raw re-ingested under a new version, sample 3 dropped
    seeded.write_metadata(RAW, raw_rows([1, 2]), graph=bumped.graph)
    increment = seeded.resolve_update(EMB, graph=bumped.graph).collect()
    assert (ids(increment.added), ids(increment.changed), ids(increment.removed)) == ([], [1, 2], [3])
    # asked about samples 2 and 3 only: the comparison is limited to them on every side
    samples = pl.DataFrame({"sample_uid": [2, 3]})
    only = seeded.resolve_update(EMB, samples=samples, graph=bumped.graph).collect()
    assert (ids(only.added), ids(only.changed), ids(only.removed)) == ([], [2], [3])


def test_a_downstream_code_version_bump_shows_as_changed_not_added(
    seeded: DeltaMetadataStore, v: VideoFeatures
) -> None:
    before = seeded.read_metadata(EMB, graph=v.graph).collect().sort("sample_uid")
    bumped = declare(embedding="2")
    increment = seeded.resolve_update(EMB, graph=bumped.graph).collect()

    assert (ids(increment.added), ids(increment.changed), ids(increment.removed)) == ([], [1, 2, 3], [])
    changed = increment.changed.sort("sample_uid")[PROVENANCE_BY_FIELD].to_list()
    old = before[PROVENANCE_BY_FIELD].to_list()
    assert all(
        n["embedding"] != o["embedding"] and n["transcript"] == o["transcript"]
        for n, o in zip(changed, old, strict=True)
    )
    assert seeded.read_metadata(EMB, graph=bumped.graph).collect().height == 0  # old rows are another version


def test_a_root_code_version_bump_shows_as_changed(seeded: DeltaMetadataStore) -> None:
    bumped = declare(frames="2")
    increment = seeded.resolve_update(RAW, samples=raw_rows([1, 2, 3]), graph=bumped.graph).collect()
    assert (ids(increment.added), ids(increment.changed), ids(increment.removed)) == ([], [1, 2, 3], [])

    seeded.write_metadata(RAW, increment.changed, graph=bumped.graph)
    assert seeded.resolve_update(RAW, samples=raw_rows([1, 2, 3]), graph=bumped.graph).counts() == {
        "added": 0,
        "changed": 0,
        "removed": 0,
    }
    assert seeded.resolve_update(EMB, graph=bumped.graph).counts() == {"added": 0, "changed": 3, "removed": 0}


def test_samples_restrict_a_downstream_comparison_and_carry_their_columns(
    seeded: DeltaMetadataStore, v: VideoFeatures
) -> None:
    seeded.write_metadata(v.Raw, raw_rows([2, 3], frames="new-"), graph=v.graph)
    seeded.write_metadata(v.Raw, raw_rows([4]), graph=v.graph)
    samples = pl.DataFrame({"sample_uid": [1, 2, 4], "priority": ["low", "high", "new"]})

    increment = seeded.resolve_update(v.Emb, samples=samples, graph=v.graph).collect()
    assert (ids(increment.added), ids(increment.changed), ids(increment.removed)) == ([4], [2], [])
    assert increment.changed["priority"].to_list() == ["high"]
    assert increment.added["priority"].to_list() == ["new"]


def test_a_downstream_before_its_upstream_has_rows_says_what_to_write_first(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    with pytest.raises(MetadataNotFoundError) as exc:
        store.resolve_update(v.Emb, graph=v.graph)
    assert str(exc.value) == (
        f"feature video/embeddings depends on video/raw, which has no metadata in {store.root_uri}; "
        "write video/raw first"
    )


def test_a_root_without_samples_says_samples_are_needed(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    with pytest.raises(MetaxyError) as exc:
        store.resolve_update(v.Raw, graph=v.graph)
    assert str(exc.value) == (
        "feature video/raw is a root feature: pass samples= with its id columns and "
        "metaxy_provenance_by_field "
        "(the root's provenance comes from its data, not from upstream)"
    )


def test_resolve_update_on_an_empty_store_adds_every_sample(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    increment = store.resolve_update(v.Raw, samples=raw_rows([1, 2]), graph=v.graph).collect()
    assert (ids(increment.added), increment.changed.height, increment.removed.height) == ([1, 2], 0, 0)
    assert increment.removed.columns == ["sample_uid", PROVENANCE_BY_FIELD, PROVENANCE]


# --------------------------------------------------------------------------------------------- errors
def test_an_unknown_feature_is_reported_with_the_known_ones(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    with pytest.raises(FeatureNotFoundError) as exc:
        store.write_metadata("video/unknown", raw_rows([1]), graph=v.graph)
    assert str(exc.value) == (
        "feature video/unknown is not in the feature graph "
        "(known features: video/embeddings, video/raw); check "
        "the key or add the module declaring it to `entrypoints` in metaxy.toml"
    )
    with pytest.raises(FeatureNotFoundError):
        store.read_metadata("video/unknown", graph=v.graph)


def test_reading_a_feature_never_written_raises_metadata_not_found(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    with pytest.raises(MetadataNotFoundError) as exc:
        store.read_metadata(v.Raw, graph=v.graph)
    assert str(exc.value) == (
        f"feature video/raw has no metadata in {store.root_uri} yet; "
        "write some with store.write_metadata (or run "
        "the pipeline that computes it) before reading"
    )
    empty = store.read_metadata(v.Raw, graph=v.graph, allow_missing=True).collect()
    assert empty.height == 0 and PROVENANCE_BY_FIELD in empty.columns


def test_rows_without_the_id_columns_are_rejected(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    with pytest.raises(MetadataSchemaError) as exc:
        store.write_metadata(v.Raw, raw_rows([1]).rename({"sample_uid": "uid"}), graph=v.graph)
    assert (
        str(exc.value)
        == "rows for feature video/raw lack id column(s) ['sample_uid']; every row needs ['sample_uid']"
    )


def test_root_rows_without_provenance_are_rejected(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    with pytest.raises(MetadataSchemaError) as exc:
        store.write_metadata(v.Raw, raw_rows([1]).drop(PROVENANCE_BY_FIELD), graph=v.graph)
    assert str(exc.value) == (
        "rows for root feature video/raw must bring metaxy_provenance_by_field: a struct with one string per "
        "field (frames, audio), e.g. content hashes of the source files"
    )


@pytest.mark.parametrize(
    ("provenance", "got"),
    [
        (pl.struct(frames=pl.lit("f")), "{frames: String}"),
        (
            pl.struct(frames=pl.lit("f"), audio=pl.lit("a"), extra=pl.lit("x")),
            "{frames: String, audio: String, extra: String}",
        ),
        (pl.struct(frames=pl.lit("f"), audio=pl.lit(1)), "{frames: String, audio: Int32}"),
    ],
)
def test_a_provenance_struct_with_other_fields_or_types_is_rejected(
    store: DeltaMetadataStore, v: VideoFeatures, provenance: pl.Expr, got: str
) -> None:
    rows = raw_rows([1]).with_columns(provenance.alias(PROVENANCE_BY_FIELD))
    with pytest.raises(MetadataSchemaError) as exc:
        store.write_metadata(v.Raw, rows, graph=v.graph)
    assert str(exc.value) == (
        "metaxy_provenance_by_field for feature video/raw must be a struct with exactly the string fields "
        f"['frames', 'audio']; got {got}"
    )


def test_a_provenance_column_that_is_not_a_struct_is_rejected(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    rows = raw_rows([1]).with_columns(pl.lit("hash").alias(PROVENANCE_BY_FIELD))
    with pytest.raises(MetadataSchemaError) as exc:
        store.write_metadata(v.Raw, rows, graph=v.graph)
    assert str(exc.value) == (
        "metaxy_provenance_by_field for feature video/raw must be a struct with one string per field "
        "(['frames', 'audio']), got String"
    )


def test_duplicate_ids_in_one_write_are_rejected(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    with pytest.raises(MetadataSchemaError) as exc:
        store.write_metadata(v.Raw, raw_rows([1, 2, 2, 3, 3]), graph=v.graph)
    assert str(exc.value) == (
        "rows for feature video/raw repeat 2 sample id(s); write one row per sample (['sample_uid'])"
    )


def test_null_ids_are_rejected(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    rows = raw_rows([1, 2]).with_columns(pl.Series("sample_uid", [1, None]))
    with pytest.raises(MetadataSchemaError) as exc:
        store.write_metadata(v.Raw, rows, graph=v.graph)
    assert str(exc.value) == "1 row(s) for feature video/raw have a null id column (['sample_uid'])"


def test_a_null_field_provenance_is_rejected(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    rows = raw_rows([1]).with_columns(
        pl.struct(frames=pl.lit("f"), audio=pl.lit(None, pl.String)).alias(PROVENANCE_BY_FIELD)
    )
    with pytest.raises(MetadataSchemaError) as exc:
        store.write_metadata(v.Raw, rows, graph=v.graph)
    assert str(exc.value) == (
        "1 row(s) for feature video/raw have a null value in metaxy_provenance_by_field; every field needs a "
        "provenance string"
    )


def test_downstream_rows_without_upstream_rows_are_rejected(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    store.write_metadata(v.Raw, raw_rows([1]), graph=v.graph)
    with pytest.raises(MetadataSchemaError) as exc:
        store.write_metadata(v.Emb, pl.DataFrame({"sample_uid": [1, 9], "dim": [1, 1]}), graph=v.graph)
    assert str(exc.value) == (
        "1 row(s) for feature video/embeddings have no matching upstream rows "
        "(e.g. [{'sample_uid': 9}]); write the "
        "upstream features first, or pass rows from resolve_update"
    )


def test_a_rejected_first_write_creates_no_table(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    with pytest.raises(MetadataSchemaError):
        store.write_metadata(v.Raw, raw_rows([1, 1]), graph=v.graph)
    assert store.has_metadata(v.Raw) is False
    assert not Path(store.table_uri(v.Raw)).exists()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda df: pl.concat([df, df]), id="duplicate-ids"),
        pytest.param(lambda df: df.with_columns(path=pl.struct(x=pl.lit(1))), id="column-type-conflict"),
        pytest.param(
            lambda df: df.with_columns(pl.col("sample_uid").cast(pl.String) + "x"), id="id-type-conflict"
        ),
    ],
)
def test_a_failed_write_leaves_the_table_version_unchanged(
    store: DeltaMetadataStore, v: VideoFeatures, bad
) -> None:
    store.write_metadata(v.Raw, raw_rows([1, 2]), graph=v.graph)
    version = store.table_version(v.Raw)
    with pytest.raises(StoreError):
        store.write_metadata(v.Raw, bad(raw_rows([3, 4])), graph=v.graph)
    assert store.table_version(v.Raw) == version
    assert ids(store.read_metadata(v.Raw, graph=v.graph, include_history=True)) == [1, 2]


def test_a_type_conflict_with_the_stored_table_names_the_feature_the_column_and_both_types(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    store.write_metadata(v.Raw, raw_rows([1]), graph=v.graph)
    rows = raw_rows([2]).with_columns(pl.lit("two").alias("sample_uid"))
    with pytest.raises(MetadataSchemaError) as exc:
        store.write_metadata(v.Raw, rows, graph=v.graph)
    assert str(exc.value).startswith(
        "rows for feature video/raw: column 'sample_uid' is Int64 in the table but String in the "
        "rows written; "
    )


def test_concurrent_first_writes_to_one_feature_all_land(tmp_path: Path, v: VideoFeatures) -> None:
    """Writers racing to create a table conflict in delta-rs ("Protocol/Metadata changed"); the store
    retries."""
    for trial in range(3):
        store = DeltaMetadataStore(tmp_path / f"trial-{trial}")
        barrier = threading.Barrier(4)

        def write(uid: int, store: DeltaMetadataStore = store, barrier: threading.Barrier = barrier) -> int:
            rows = raw_rows([uid]).with_columns(batch=pl.lit(f"worker-{uid}"))
            barrier.wait()
            return store.write_metadata(v.Raw, rows, graph=v.graph)

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(write, [1, 2, 3, 4])) == [1, 1, 1, 1]
        history = store.read_metadata(v.Raw, graph=v.graph, include_history=True).collect()
        assert sorted(history["sample_uid"]) == [1, 2, 3, 4]  # each row exactly once
        assert sorted(history["batch"]) == ["worker-1", "worker-2", "worker-3", "worker-4"]


# ------------------------------------------------------------------------------------------- snapshots
def test_push_snapshot_is_idempotent(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    first = store.push_snapshot(v.graph)
    assert (first.snapshot_version, first.already_pushed, first.previous_version) == (
        v.graph.snapshot_version,
        False,
        None,
    )
    version = store.table_version(system="snapshots")

    again = store.push_snapshot(v.graph)
    assert (again.already_pushed, again.previous_version) == (True, None)
    assert store.table_version(system="snapshots") == version  # nothing written
    assert [s.snapshot_version for s in store.list_snapshots()] == [v.graph.snapshot_version]


def test_pushing_a_new_snapshot_records_the_previous_one(store: DeltaMetadataStore, v: VideoFeatures) -> None:
    bumped = declare(embedding="2")
    store.push_snapshot(v.graph)
    result = store.push_snapshot(bumped.graph)
    assert (result.already_pushed, result.previous_version) == (False, v.graph.snapshot_version)
    assert store.push_snapshot(bumped.graph).previous_version == v.graph.snapshot_version
    latest = store.latest_snapshot()
    assert latest.snapshot_version == bumped.graph.snapshot_version
    assert latest.feature_count == 2 and latest.pushed_at.tzinfo is not None
    assert store.latest_snapshot(project="other") is None  # snapshots are scoped by project


def test_load_snapshot_graph_rebuilds_the_graph_without_the_classes(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    store.push_snapshot(v.graph)
    store.write_metadata(v.Raw, raw_rows([1, 2]), graph=v.graph)

    rebuilt = store.load_snapshot_graph(v.graph.snapshot_version)

    assert rebuilt is not v.graph
    assert rebuilt.snapshot_version == v.graph.snapshot_version
    assert all(rebuilt.feature_class(k) is None for k in rebuilt.keys)
    assert rebuilt.field_versions(EMB) == v.graph.field_versions(EMB)
    assert ids(store.read_metadata(RAW, graph=rebuilt)) == [1, 2]  # usable to read what that version wrote
    assert store.resolve_update(EMB, graph=rebuilt).counts()["added"] == 2


def test_loading_a_snapshot_never_pushed_lists_the_pushed_ones(
    store: DeltaMetadataStore, v: VideoFeatures
) -> None:
    store.push_snapshot(v.graph)
    with pytest.raises(SnapshotNotFoundError) as exc:
        store.load_snapshot_graph("0123456789abcdef")
    assert str(exc.value) == (
        f"snapshot 0123456789abcdef was never pushed to {store.root_uri} for project 'default' (pushed: "
        f"{v.graph.snapshot_version}); run `metaxy push` from the code that defines it"
    )
