"""The feature graph: registration, activation, validation at declaration, lookups, order and snapshots."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from metaxy_core import (
    Feature,
    FeatureDep,
    FeatureGraph,
    FeatureKey,
    FeatureSpec,
    FieldDep,
    FieldKey,
    FieldSpec,
)
from metaxy_core.errors import (
    DuplicateFeatureError,
    FeatureNotFoundError,
    GraphError,
    UnknownDependencyError,
)


def _spec(
    key: str, *, deps: list[str] = (), fields: list[str] = ("default",), ids: list[str] = ("sample_uid",)
):
    return FeatureSpec(
        key=key,
        id_columns=list(ids),
        deps=[FeatureDep(feature=d) for d in deps],
        fields=[FieldSpec(key=f) for f in fields],
    )


# -------------------------------------------------------------------------------------------- activation
def test_declaring_a_feature_registers_it_in_the_active_graph(graph: FeatureGraph) -> None:
    class VideoRaw(Feature, spec=FeatureSpec(key="video/raw", fields=[FieldSpec(key="frames")])):
        """A docstring."""

        path: str

    assert graph.keys == [FeatureKey("video/raw")]
    assert VideoRaw.graph is graph
    assert graph.feature_class("video/raw") is VideoRaw
    assert VideoRaw in graph and "video/raw" in graph and ["video", "raw"] in graph
    assert "video/other" not in graph and 42 not in graph
    assert VideoRaw.user_columns() == {"path": str}


def test_use_activates_a_graph_only_inside_the_block_and_nests() -> None:
    outer, inner = FeatureGraph(), FeatureGraph()
    default = FeatureGraph.get_active()
    with outer.use():
        assert FeatureGraph.get_active() is outer
        with inner.use():
            assert FeatureGraph.get_active() is inner

            class A(Feature, spec=_spec("a")):
                pass

        assert FeatureGraph.get_active() is outer
    assert FeatureGraph.get_active() is default
    assert "a" in inner and "a" not in outer and "a" not in default


def test_a_feature_class_without_spec_is_an_abstract_base(graph: FeatureGraph) -> None:
    class Base(Feature):
        shared: int

    class Concrete(Base, spec=_spec("concrete")):
        own: str

    assert graph.keys == [FeatureKey("concrete")]
    assert Concrete.user_columns() == {"shared": int, "own": str}


def test_spec_given_as_a_dict_is_validated(graph: FeatureGraph) -> None:
    class Raw(Feature, spec={"key": "raw", "fields": [{"key": "x", "code_version": 2}]}):
        pass

    assert Raw.spec.field("x").code_version == "2"


# --------------------------------------------------------------------------------- validation at declaring
def test_a_duplicate_key_names_the_first_declaring_class(graph: FeatureGraph) -> None:
    class First(Feature, spec=_spec("video/raw")):
        pass

    with pytest.raises(DuplicateFeatureError) as exc:

        class Second(Feature, spec=_spec("video/raw")):
            pass

    assert str(exc.value) == (
        f"feature video/raw is declared twice (first declared by {__name__}."
        "test_a_duplicate_key_names_the_first_declaring_class.<locals>.First); give each feature a unique key"
    )


def test_an_upstream_that_is_not_in_the_graph_fails_at_declaration(graph: FeatureGraph) -> None:
    with pytest.raises(UnknownDependencyError) as exc:
        graph.add(_spec("video/emb", deps=["video/raw"]))
    assert str(exc.value) == (
        "feature video/emb depends on video/raw, which is not in the graph; declare video/raw first "
        "(or import the module that declares it)"
    )
    assert len(graph) == 0


def test_a_field_dep_on_a_missing_upstream_field_lists_the_fields_it_has(graph: FeatureGraph) -> None:
    graph.add(_spec("raw", fields=["frames", "audio"]))
    spec = FeatureSpec(
        key="emb",
        deps=[FeatureDep(feature="raw")],
        fields=[FieldSpec(key="e", deps=[FieldDep(feature="raw", fields=["frames", "pixels"])])],
    )
    with pytest.raises(UnknownDependencyError) as exc:
        graph.add(spec)
    assert (
        str(exc.value)
        == "feature emb, field e: upstream raw has no field pixels (it has ['audio', 'frames'])"
    )


def test_a_field_dep_on_a_feature_outside_deps_says_how_to_fix_it() -> None:
    with pytest.raises(ValidationError) as exc:
        FeatureSpec(key="emb", fields=[FieldSpec(key="e", deps=[FieldDep(feature="raw")])])
    assert (
        "feature emb, field e: depends on raw, which is not in the feature's deps; "
        "add FeatureDep(feature='raw')" in str(exc.value)
    )


def test_an_upstream_with_other_id_columns_is_rejected(graph: FeatureGraph) -> None:
    graph.add(_spec("clips", ids=["video_uid", "clip_idx"]))
    graph.add(_spec("clip_emb", deps=["clips"], ids=["video_uid", "clip_idx"]))  # same ids: fine
    with pytest.raises(GraphError) as exc:
        graph.add(_spec("by_sample", deps=["clips"], ids=["sample_uid"]))
    assert str(exc.value) == (
        "feature by_sample joins its upstream clips on id columns ['sample_uid'], but clips has id columns "
        "['video_uid', 'clip_idx']; give both the same id columns"
    )
    # A subset would repeat ids in the expected provenance (one row per clip for one video): refused too.
    with pytest.raises(GraphError, match="give both the same id columns"):
        graph.add(_spec("per_video", deps=["clips"], ids=["video_uid"]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id_columns": []}, "feature x: id_columns may not be empty (e.g. ['sample_uid'])"),
        ({"id_columns": ["a", "a"]}, "feature x: id_columns ['a', 'a'] contain a duplicate"),
        (
            {"id_columns": ["metaxy_id"]},
            "feature x: id column(s) ['metaxy_id'] are invalid; the 'metaxy_' prefix is reserved",
        ),
        ({"fields": []}, "feature x: declare at least one field"),
        ({"fields": [FieldSpec(key="f"), FieldSpec(key="f")]}, "feature x: field(s) ['f'] declared twice"),
        ({"deps": ["x"]}, "feature x depends on itself"),
        ({"deps": ["a", "a"]}, "feature x: an upstream feature is listed twice in deps"),
    ],
)
def test_invalid_specs_are_rejected_with_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        FeatureSpec(key="x", **kwargs)
    assert message in str(exc.value)


def test_unknown_spec_arguments_are_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        FeatureSpec(key="x", idcolumns=["a"])  # type: ignore[call-arg]
    # pydantic's error type, not its wording (which changes between releases)
    assert [(e["type"], e["loc"]) for e in exc.value.errors()] == [("extra_forbidden", ("idcolumns",))]


# ----------------------------------------------------------------------------------------------- lookups
def test_spec_accepts_a_class_a_key_a_string_or_a_list(graph: FeatureGraph) -> None:
    class Raw(Feature, spec=_spec("video/raw")):
        pass

    assert graph.spec(Raw) is graph.spec("video/raw") is graph.spec(["video", "raw"]) is Raw.spec
    assert graph.spec(FeatureKey("video/raw")) is Raw.spec


def test_an_unknown_feature_lists_the_known_ones_and_the_fix(graph: FeatureGraph) -> None:
    graph.add(_spec("b"))
    graph.add(_spec("a"))
    with pytest.raises(FeatureNotFoundError) as exc:
        graph.spec("video/missing")
    assert str(exc.value) == (
        "feature video/missing is not in the feature graph (known features: a, b); check the key or add the "
        "module declaring it to `entrypoints` in metaxy.toml"
    )
    assert isinstance(exc.value, KeyError)


def test_topological_order_is_upstream_first_and_ties_break_by_key(graph: FeatureGraph) -> None:
    graph.add(_spec("z_root"))
    graph.add(_spec("a_root"))
    graph.add(_spec("m", deps=["z_root"]))
    graph.add(_spec("b", deps=["m", "a_root"]))
    graph.add(_spec("c", deps=["a_root"]))
    order = [str(k) for k in graph.topological_order()]
    assert order == ["a_root", "c", "z_root", "m", "b"]
    assert [[str(k) for k in layer] for layer in graph.layers()] == [["a_root", "z_root"], ["c", "m"], ["b"]]
    assert [str(k) for k in graph.downstream(["z_root"])] == ["m", "b"]
    assert [str(k) for k in graph.downstream(["a_root"])] == ["c", "b"]
    assert graph.upstream("b") == [FeatureKey("m"), FeatureKey("a_root")]
    assert [str(k) for k in graph.topological_order([FeatureKey("b"), FeatureKey("z_root")])] == [
        "z_root",
        "b",
    ]


def test_field_without_deps_uses_every_upstream_field_and_explicit_deps_only_theirs(
    graph: FeatureGraph,
) -> None:
    graph.add(_spec("raw", fields=["frames", "audio"]))
    graph.add(_spec("meta", fields=["title"]))
    graph.add(
        FeatureSpec(
            key="emb",
            deps=[FeatureDep(feature="raw"), FeatureDep(feature="meta")],
            fields=[
                FieldSpec(key="everything"),
                FieldSpec(key="visual", deps=[FieldDep(feature="raw", fields=["frames"])]),
                FieldSpec(key="all_raw", deps=[FieldDep(feature="raw")]),
                FieldSpec(key="constant", deps=[]),
            ],
        )
    )
    pairs = lambda field: [(str(k), str(f)) for k, f in graph.resolved_field_deps("emb", field)]  # noqa: E731
    assert pairs("everything") == [("meta", "title"), ("raw", "audio"), ("raw", "frames")]
    assert pairs("visual") == [("raw", "frames")]
    assert pairs("all_raw") == [("raw", "audio"), ("raw", "frames")]
    assert pairs("constant") == []


def test_remove_refuses_a_feature_others_depend_on(graph: FeatureGraph) -> None:
    graph.add(_spec("raw"))
    graph.add(_spec("emb", deps=["raw"]))
    before = graph.snapshot_version
    with pytest.raises(GraphError) as exc:
        graph.remove("raw")
    assert str(exc.value) == "cannot remove raw: emb depend on it"
    graph.remove("emb")
    assert graph.keys == [FeatureKey("raw")]
    assert graph.snapshot_version != before  # cached versions are invalidated


# --------------------------------------------------------------------------------------------- snapshots
def _video_graph() -> FeatureGraph:
    graph = FeatureGraph()
    with graph.use():

        class Raw(
            Feature,
            spec=FeatureSpec(key="video/raw", fields=[FieldSpec(key="frames"), FieldSpec(key="audio")]),
        ):
            pass

        class Emb(
            Feature,
            spec=FeatureSpec(
                key="video/emb",
                deps=[FeatureDep(feature=Raw)],
                fields=[
                    FieldSpec(key="e", code_version="3", deps=[FieldDep(feature=Raw, fields=["frames"])])
                ],
            ),
        ):
            pass

    return graph


def test_snapshot_round_trips_through_json_without_the_classes() -> None:
    graph = _video_graph()
    data = json.loads(json.dumps(graph.to_snapshot()))
    assert data["snapshot_version"] == graph.snapshot_version
    assert [f["key"] for f in data["features"]] == ["video/raw", "video/emb"]
    assert data["features"][1]["class_path"].endswith("Emb")
    rebuilt = FeatureGraph.from_snapshot(data)
    assert rebuilt.snapshot_version == graph.snapshot_version
    assert rebuilt.field_versions("video/emb") == graph.field_versions("video/emb")
    assert rebuilt.spec("video/emb") == graph.spec("video/emb")
    assert rebuilt.feature_class("video/emb") is None
    assert rebuilt.resolved_field_deps("video/emb", "e") == [(FeatureKey("video/raw"), FieldKey("frames"))]


def test_a_snapshot_that_no_longer_hashes_the_same_is_rejected() -> None:
    data = _video_graph().to_snapshot()
    data["features"][1]["fields"][0]["code_version"] = "4"
    with pytest.raises(GraphError) as exc:
        FeatureGraph.from_snapshot(data)
    assert str(exc.value).startswith(f"snapshot {data['snapshot_version']} rebuilt to version ")
    assert str(exc.value).endswith(
        "; the stored snapshot is corrupt or was written by an incompatible metaxy version"
    )
