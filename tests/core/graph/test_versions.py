"""Stable versions: golden values, the documented algorithms recomputed independently, what does and does not
change a version.

The golden values below are a compatibility contract: stored rows carry these strings, so a change to any of
them means every user's store looks outdated. Change them only together with a migration story.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import xxhash

from metaxy_core import (
    DeltaMetadataStore,
    Feature,
    FeatureDep,
    FeatureGraph,
    FeatureSpec,
    FieldDep,
    FieldSpec,
)
from metaxy_core.store.provenance import PROVENANCE, PROVENANCE_BY_FIELD

GOLDEN_FIELD_VERSIONS = {
    "video/raw": {"frames": "a1a6b49d39273171", "audio": "483c0e4b2472162a"},
    "video/embeddings": {"embedding": "676cb629b4ebb228", "summary": "9db05c1114295183"},
}
GOLDEN_FEATURE_VERSIONS = {"video/raw": "cac324d70201804e", "video/embeddings": "f4197d713f70e6d0"}
GOLDEN_SNAPSHOT_VERSION = "694bf02569250444"

# Root rows written with these provenances; expected downstream provenance per sample.
GOLDEN_RAW_PROVENANCE = {1: "5962824658882091190", 2: "7943035218974147202"}
GOLDEN_EMB_PROVENANCE_BY_FIELD = {
    1: {"embedding": "8252814400928622027", "summary": "11528002757418324301"},
    2: {"embedding": "11952339444227138994", "summary": "16721327780554728656"},
}
GOLDEN_EMB_PROVENANCE = {1: "1083827578642702898", 2: "6417349236211614600"}


def declare_video(
    *,
    raw_doc: str = "Raw video.",
    field_order: tuple[str, str] = ("frames", "audio"),
    embedding_deps: tuple[str, ...] = ("frames",),
    frames_version: str = "1",
    summary_version: str = "2",
    renamed: bool = False,
) -> FeatureGraph:
    """The golden graph; the keyword arguments vary things that must (or must not) change versions."""
    graph = FeatureGraph()
    versions = {"frames": frames_version, "audio": "1"}
    with graph.use():
        raw_spec = FeatureSpec(
            key="video/raw",
            id_columns=["sample_uid"],
            fields=[FieldSpec(key=name, code_version=versions[name]) for name in field_order],
        )
        namespace = {"__doc__": raw_doc, "__annotations__": {"a_new_user_column": int} if renamed else {}}
        raw = type("RenamedRaw" if renamed else "VideoRaw", (Feature,), namespace, spec=raw_spec)

        class VideoEmbeddings(
            Feature,
            spec=FeatureSpec(
                key="video/embeddings",
                id_columns=["sample_uid"],
                deps=[FeatureDep(feature=raw)],
                fields=[
                    FieldSpec(
                        key="embedding",
                        code_version="1",
                        deps=[FieldDep(feature=raw, fields=list(embedding_deps))],
                    ),
                    FieldSpec(key="summary", code_version=summary_version),  # every upstream field
                ],
            ),
        ):
            """Embeddings computed from the frames."""

    return graph


def all_versions(graph: FeatureGraph) -> tuple[dict, dict, str]:
    fields = {str(k): graph.field_versions(k) for k in graph.keys}
    features = {str(k): graph.feature_version(k) for k in graph.keys}
    return fields, features, graph.snapshot_version


# ------------------------------------------------------------------------------------------------ golden
def test_golden_definition_versions_are_pinned() -> None:
    fields, features, snapshot = all_versions(declare_video())
    assert fields == GOLDEN_FIELD_VERSIONS
    assert features == GOLDEN_FEATURE_VERSIONS
    assert snapshot == GOLDEN_SNAPSHOT_VERSION


def _sha(payload: object) -> str:
    """The documented definition hash, written out from the spec rather than imported."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def test_golden_definition_versions_follow_the_documented_algorithm() -> None:
    frames = _sha({"feature": "video/raw", "field": "frames", "code_version": "1", "deps": []})
    audio = _sha({"feature": "video/raw", "field": "audio", "code_version": "1", "deps": []})
    raw = _sha({"feature": "video/raw", "fields": {"audio": audio, "frames": frames}})
    embedding = _sha(
        {
            "feature": "video/embeddings",
            "field": "embedding",
            "code_version": "1",
            "deps": [f"video/raw:frames:{frames}"],
        }
    )
    summary = _sha(
        {
            "feature": "video/embeddings",
            "field": "summary",
            "code_version": "2",
            "deps": sorted([f"video/raw:frames:{frames}", f"video/raw:audio:{audio}"]),
        }
    )
    emb = _sha({"feature": "video/embeddings", "fields": {"embedding": embedding, "summary": summary}})
    snapshot = _sha({"features": {"video/embeddings": emb, "video/raw": raw}})
    assert {"frames": frames, "audio": audio} == GOLDEN_FIELD_VERSIONS["video/raw"]
    assert {"embedding": embedding, "summary": summary} == GOLDEN_FIELD_VERSIONS["video/embeddings"]
    assert {"video/raw": raw, "video/embeddings": emb} == GOLDEN_FEATURE_VERSIONS
    assert snapshot == GOLDEN_SNAPSHOT_VERSION


def _h(*parts: str) -> str:
    """The documented row hash: XXH3-64, seed 0, over UTF-8 of the '|'-joined parts, as a decimal string."""
    return str(xxhash.xxh3_64_intdigest("|".join(parts).encode("utf-8"), seed=0))


RAW_ROWS = pl.DataFrame(
    {
        "sample_uid": [1, 2],
        PROVENANCE_BY_FIELD: [{"frames": "f-1", "audio": "a-1"}, {"frames": "f-2", "audio": "a-2"}],
    }
)


def test_golden_row_provenance_is_pinned_and_matches_an_independent_xxh3(tmp_path: Path) -> None:
    graph = declare_video()
    store = DeltaMetadataStore(tmp_path)
    store.write_metadata("video/raw", RAW_ROWS, graph=graph)
    raw = store.read_metadata("video/raw", graph=graph).collect().sort("sample_uid")
    added = store.resolve_update("video/embeddings", graph=graph).collect().added.sort("sample_uid")

    assert dict(zip(raw["sample_uid"], raw[PROVENANCE], strict=True)) == GOLDEN_RAW_PROVENANCE
    assert (
        dict(zip(added["sample_uid"], added[PROVENANCE_BY_FIELD].to_list(), strict=True))
        == GOLDEN_EMB_PROVENANCE_BY_FIELD
    )
    assert dict(zip(added["sample_uid"], added[PROVENANCE], strict=True)) == GOLDEN_EMB_PROVENANCE

    fv = GOLDEN_FIELD_VERSIONS["video/embeddings"]
    for uid in (1, 2):
        frames, audio = f"f-{uid}", f"a-{uid}"
        # root: H(field provenances in sorted field order: audio, frames)
        assert GOLDEN_RAW_PROVENANCE[uid] == _h(audio, frames)
        # downstream field: H(field version | upstream data versions in sorted (feature, field) order)
        embedding = _h(fv["embedding"], frames)
        summary = _h(fv["summary"], audio, frames)
        assert GOLDEN_EMB_PROVENANCE_BY_FIELD[uid] == {"embedding": embedding, "summary": summary}
        assert GOLDEN_EMB_PROVENANCE[uid] == _h(embedding, summary)


def test_row_hash_is_a_full_width_unsigned_64_bit_decimal() -> None:
    from metaxy_core.store.provenance import row_hash

    values = ["", "x", "ünïcödé", "a|b"] + [f"sample-{i}" for i in range(200)]
    out = pl.DataFrame({"v": values}).select(row_hash([pl.col("v")]).alias("h"))["h"].to_list()
    assert out == [str(xxhash.xxh3_64_intdigest(v.encode("utf-8"))) for v in values]
    assert max(int(h) for h in out) > 2**63  # unsigned: the top bit is used, not truncated or negative


# --------------------------------------------------------------------------------------- what is ignored
def test_docstrings_class_names_and_user_columns_do_not_change_versions() -> None:
    changed = declare_video(raw_doc="A completely different docstring.", renamed=True)
    raw = changed.feature_class("video/raw")
    assert raw.__name__ == "RenamedRaw" and raw.__doc__ == "A completely different docstring."
    assert raw.user_columns() == {"a_new_user_column": int}
    assert all_versions(changed) == all_versions(declare_video())


def test_field_declaration_order_does_not_change_versions() -> None:
    assert all_versions(declare_video(field_order=("audio", "frames"))) == all_versions(declare_video())


def test_field_dep_listing_order_does_not_change_versions() -> None:
    both = declare_video(embedding_deps=("frames", "audio"))
    assert all_versions(declare_video(embedding_deps=("audio", "frames"))) == all_versions(both)


def test_feature_declaration_and_dependency_order_do_not_change_versions() -> None:
    def build(order: list[str], dep_order: list[str]) -> FeatureGraph:
        graph = FeatureGraph()
        for key in order:
            graph.add(FeatureSpec(key=key, fields=[FieldSpec(key="x")]))
        graph.add(
            FeatureSpec(
                key="joined", deps=[FeatureDep(feature=k) for k in dep_order], fields=[FieldSpec(key="y")]
            )
        )
        return graph

    a = build(["audio", "video"], ["audio", "video"])
    b = build(["video", "audio"], ["video", "audio"])
    assert all_versions(a) == all_versions(b)


def test_definition_digest_ignores_dict_insertion_order() -> None:
    from metaxy_core.graph.versions import digest

    assert digest({"b": 1, "a": {"y": 2, "x": 3}}) == digest({"a": {"x": 3, "y": 2}, "b": 1})


def test_an_integer_code_version_equals_its_string() -> None:
    assert FieldSpec(key="x", code_version=2) == FieldSpec(key="x", code_version="2")


# ----------------------------------------------------------------------------------------- what changes
def test_a_code_version_bump_changes_only_its_lineage() -> None:
    base_fields, base_features, base_snapshot = all_versions(declare_video())
    fields, features, snapshot = all_versions(declare_video(frames_version="2"))

    assert fields["video/raw"]["frames"] != base_fields["video/raw"]["frames"]
    assert fields["video/raw"]["audio"] == base_fields["video/raw"]["audio"]
    assert (
        fields["video/embeddings"]["embedding"] != base_fields["video/embeddings"]["embedding"]
    )  # uses frames
    assert (
        fields["video/embeddings"]["summary"] != base_fields["video/embeddings"]["summary"]
    )  # uses all fields
    assert features != base_features and snapshot != base_snapshot


def test_a_downstream_field_not_using_the_bumped_upstream_field_keeps_its_version() -> None:
    base, _, _ = all_versions(declare_video(embedding_deps=("audio",)))
    bumped, _, _ = all_versions(declare_video(embedding_deps=("audio",), frames_version="2"))
    assert bumped["video/embeddings"]["embedding"] == base["video/embeddings"]["embedding"]
    assert bumped["video/embeddings"]["summary"] != base["video/embeddings"]["summary"]


def test_a_downstream_code_version_bump_leaves_the_upstream_alone() -> None:
    base_fields, base_features, _ = all_versions(declare_video())
    fields, features, _ = all_versions(declare_video(summary_version="3"))
    assert features["video/raw"] == base_features["video/raw"]
    assert fields["video/embeddings"]["embedding"] == base_fields["video/embeddings"]["embedding"]
    assert features["video/embeddings"] != base_features["video/embeddings"]


def test_field_lineage_is_part_of_the_field_version() -> None:
    lineages = [("frames",), ("audio",), ("frames", "audio")]
    versions = {
        all_versions(declare_video(embedding_deps=d))[0]["video/embeddings"]["embedding"] for d in lineages
    }
    assert len(versions) == len(lineages)
