"""The store takes frames of any kind code written for Metaxy holds (narwhals, pyarrow, pandas, polars) and
hands out increments that answer the narwhals idioms Metaxy's migrations use."""

from __future__ import annotations

from pathlib import Path

import narwhals as nw
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.errors import MetadataSchemaError
from metaxy_core.store.frames import ACCEPTED_FRAMES
from metaxy_core.testing import video_features, video_raw_rows

PROV = "metaxy_provenance_by_field"


@pytest.fixture
def features():
    return video_features()


@pytest.fixture
def store(tmp_path: Path) -> DeltaMetadataStore:
    return DeltaMetadataStore(tmp_path / "store")


def raw_rows(uids: list[int]) -> pl.DataFrame:
    return video_raw_rows(uids)


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda df: nw.from_native(df), id="narwhals-eager"),
        pytest.param(lambda df: nw.from_native(df.lazy()), id="narwhals-lazy"),
        pytest.param(lambda df: df.to_arrow(), id="pyarrow"),
        pytest.param(lambda df: nw.from_native(df.to_arrow()), id="narwhals-over-pyarrow"),
        pytest.param(lambda df: df.to_pandas(), id="pandas"),
        pytest.param(lambda df: df.lazy(), id="polars-lazy"),
    ],
)
def test_write_metadata_takes_any_frame_kind_with_its_provenance_struct(store, features, convert) -> None:
    g = features.graph
    assert store.write_metadata(features.Raw, convert(raw_rows([1, 2])), graph=g) == 2
    added = store.resolve_update(features.Emb, graph=g).collect().added.with_columns(dim=pl.lit(4))
    assert store.write_metadata(features.Emb, convert(added), graph=g) == 2
    stored = store.read_metadata(features.Emb, graph=g).collect()
    assert sorted(stored["sample_uid"].to_list()) == [1, 2] and stored["dim"].to_list() == [4, 4]


def test_resolve_update_samples_may_be_narwhals_and_increments_answer_len_and_to_native(
    store, features
) -> None:
    g = features.graph
    store.write_metadata(features.Raw, raw_rows([1, 2, 3]), graph=g)
    increment = store.resolve_update(
        features.Emb, samples=nw.from_native(pl.DataFrame({"sample_uid": [1, 3]})), graph=g
    )
    assert len(increment.added) == 2 and len(increment.changed) == 0 and len(increment.removed) == 0
    native = increment.added.to_native()
    assert isinstance(native, pl.DataFrame) and sorted(native["sample_uid"].to_list()) == [1, 3]
    # Metaxy's documented idiom, as written there:
    assert nw.from_native(increment.added.to_native()).to_polars().columns[:2] == ["sample_uid", PROV]
    # Still polars lazy frames: derived frames keep len(), and the 0.1.x names read the same frames.
    assert len(increment.added.filter(pl.col("sample_uid") > 1)) == 1
    assert increment.new is increment.added and increment.stale is increment.changed
    collected = increment.collect()
    assert len(collected.added) == 2 and collected.added.to_native() is collected.added


def test_a_root_feature_resolves_with_pyarrow_samples_carrying_their_provenance(store, features) -> None:
    g = features.graph
    store.write_metadata(features.Raw, raw_rows([1]), graph=g)
    increment = store.resolve_update(features.Raw, samples=raw_rows([1, 2]).to_arrow(), graph=g)
    assert len(increment.added) == 1 and len(increment.changed) == 0


def test_read_metadata_takes_narwhals_filters(store, features) -> None:
    g = features.graph
    store.write_metadata(features.Raw, raw_rows([1, 2, 3]), graph=g)
    rows = store.read_metadata(features.Raw, filters=[nw.col("sample_uid") >= 2], graph=g).collect()
    assert sorted(rows["sample_uid"].to_list()) == [2, 3]


@pytest.mark.parametrize("bad", [[{"sample_uid": 1}], "sample_uid", {"sample_uid": [1]}])
def test_a_frame_of_no_accepted_kind_is_refused_naming_the_accepted_kinds(store, features, bad) -> None:
    with pytest.raises(MetadataSchemaError) as info:
        store.write_metadata(features.Raw, bad, graph=features.graph)
    assert str(info.value).startswith("rows for feature video/raw must be ") and ACCEPTED_FRAMES in str(
        info.value
    )
    with pytest.raises(MetadataSchemaError, match="samples for feature video/embeddings must be"):
        store.resolve_update(features.Emb, samples=bad, graph=features.graph)


@pytest.mark.parametrize("wrap", [lambda df: nw.from_native(pl.from_pandas(df)), pa.Table.from_pandas])
def test_a_wrong_provenance_struct_in_a_foreign_frame_gets_the_plain_struct_message(
    store, features, wrap
) -> None:
    rows = pd.DataFrame({"sample_uid": [1], PROV: [{"file": "x"}]})  # a field the feature does not have
    with pytest.raises(MetadataSchemaError) as info:
        store.write_metadata(features.Raw, wrap(rows), graph=features.graph)
    assert str(info.value) == (
        f"{PROV} for feature video/raw must be a struct with exactly the string fields ['frames', 'audio']; "
        "got {file: String}"
    )
