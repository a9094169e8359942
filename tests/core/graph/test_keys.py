"""Feature and field keys: construction, validation (with exact messages) and the table-name encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metaxy_core import FeatureKey, FieldDep, FieldKey
from metaxy_core.errors import InvalidKeyError, MetaxyError


# ------------------------------------------------------------------------------------------- construction
def test_string_list_tuple_and_key_construct_equal_keys() -> None:
    key = FeatureKey("video/raw")
    assert key == FeatureKey(["video", "raw"]) == FeatureKey(("video", "raw")) == FeatureKey(key)
    assert key.parts == ("video", "raw")
    assert hash(key) == hash(FeatureKey(["video", "raw"]))
    assert len({key, FeatureKey(["video", "raw"])}) == 1


def test_key_renders_as_slash_string_and_double_underscore_table_name() -> None:
    key = FeatureKey(["video", "raw-v2.1"])
    assert str(key) == key.to_string() == "video/raw-v2.1"
    assert key.to_table_name() == "video__raw-v2.1"
    assert repr(key) == "FeatureKey('video/raw-v2.1')"
    assert repr(FieldKey("frames")) == "FieldKey('frames')"


def test_feature_key_never_equals_a_field_key_or_a_string() -> None:
    assert FeatureKey("frames") != FieldKey("frames")
    assert FeatureKey("frames") != "frames"
    assert hash(FeatureKey("frames")) != hash(FieldKey("frames"))


def test_keys_are_immutable() -> None:
    key = FeatureKey("video/raw")
    with pytest.raises(AttributeError, match="FeatureKey is immutable"):
        key.parts = ("other",)  # type: ignore[misc]


def test_keys_sort_by_parts() -> None:
    keys = [FeatureKey("b"), FeatureKey("a/z"), FeatureKey("a")]
    assert sorted(keys) == [FeatureKey("a"), FeatureKey("a/z"), FeatureKey("b")]


# --------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "feature key '' has an empty part; write parts like 'video/raw'"),
        ("a//b", "feature key 'a//b' has an empty part; write parts like 'video/raw'"),
        ("video/raw/", "feature key 'video/raw/' has an empty part; write parts like 'video/raw'"),
        ("../etc", "feature key '../etc': '..' is not allowed in a key part"),
        ("a/..", "feature key 'a/..': '..' is not allowed in a key part"),
        ("a..b", "feature key 'a..b': '..' is not allowed in a key part"),
        ("a\\b", "feature key 'a\\\\b': a part may not contain a path separator"),
        (["a/b"], "feature key ['a/b']: a part may not contain a path separator"),
        (
            "video__raw",
            "feature key 'video__raw': '__' is reserved (it joins key parts in table names); "
            "use a single '_'",
        ),
        (
            "_hidden",
            "feature key '_hidden': part '_hidden' must start with a letter or digit "
            "and contain only letters, digits, '_', '-' and '.'",
        ),
        (
            ".git",
            "feature key '.git': part '.git' must start with a letter or digit and contain only letters, "
            "digits, '_', '-' and '.'",
        ),
        (
            "a b",
            "feature key 'a b': part 'a b' must start with a letter or digit and contain only letters, "
            "digits, '_', '-' and '.'",
        ),
        ([], "feature key may not be empty"),
        (["video", 1], "feature key ['video', 1]: every part must be a string, got int"),
        (5, "feature key must be a string like 'a/b' or a list of parts, got 5"),
    ],
)
def test_malformed_feature_keys_are_rejected_with_the_reason(raw: object, message: str) -> None:
    with pytest.raises(InvalidKeyError) as exc:
        FeatureKey(raw)  # type: ignore[arg-type]
    assert str(exc.value) == message


def test_invalid_key_error_is_a_metaxy_error_and_a_value_error() -> None:
    with pytest.raises(InvalidKeyError) as exc:
        FieldKey("")
    assert isinstance(exc.value, MetaxyError) and isinstance(exc.value, ValueError)
    assert str(exc.value) == "field key '' has an empty part; write parts like 'video/raw'"


# ------------------------------------------------------------------------------------- table-name encoding
def _decode_table_name(name: str) -> tuple[str, ...]:
    """Left inverse of ``to_table_name``: a part may end with '_' but never start with one or hold '__'."""
    pieces = name.split("__")
    parts = [pieces[0]]
    for piece in pieces[1:]:
        if piece.startswith("_"):
            parts[-1] += "_"
            piece = piece[1:]
        parts.append(piece)
    return tuple(parts)


def test_a_part_ending_in_underscore_cannot_collide_with_one_starting_with_it() -> None:
    assert FeatureKey(["a_", "b"]).to_table_name() == "a___b"
    with pytest.raises(InvalidKeyError):  # the only other way to spell "a___b" is not a valid key
        FeatureKey(["a", "_b"])
    assert _decode_table_name("a___b") == ("a_", "b")


_PARTS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-.]{0,6}", fullmatch=True).filter(
    lambda p: "__" not in p and ".." not in p
)


@given(st.lists(_PARTS, min_size=1, max_size=4))
def test_table_name_encoding_is_injective(parts: list[str]) -> None:
    key = FeatureKey(parts)
    assert "/" not in key.to_table_name()
    assert _decode_table_name(key.to_table_name()) == key.parts


# ------------------------------------------------------------------------------------------ pydantic use
def test_specs_coerce_strings_to_keys_and_serialise_them_back_as_strings() -> None:
    dep = FieldDep(feature="video/raw", fields="frames")
    assert dep.feature == FeatureKey("video/raw")
    assert dep.fields == (FieldKey("frames"),)
    assert dep.model_dump(mode="json") == {"feature": "video/raw", "fields": ["frames"]}


def test_specs_report_an_invalid_key_as_a_validation_error_naming_it() -> None:
    from pydantic import ValidationError

    with pytest.raises(
        ValidationError, match=r"feature key 'video/\.\.': '\.\.' is not allowed in a key part"
    ):
        FieldDep(feature="video/..")


def test_a_key_longer_than_the_documented_limit_is_refused_at_declaration() -> None:
    from metaxy_core import Feature, FeatureGraph, FeatureSpec, FieldSpec
    from metaxy_core.graph.keys import MAX_KEY_LENGTH

    longest = "a/" + "b" * (MAX_KEY_LENGTH - 3)  # "a__bbb…" is exactly the limit as a table name
    assert len(FeatureKey(longest).to_table_name()) == MAX_KEY_LENGTH
    too_long = longest + "b"
    with pytest.raises(
        InvalidKeyError, match=rf"is {MAX_KEY_LENGTH + 1} characters long.*limit is {MAX_KEY_LENGTH}"
    ):
        FeatureKey(too_long)
    with FeatureGraph().use(), pytest.raises(ValueError, match="shorten it"):

        class TooLong(
            Feature, spec=FeatureSpec(key=too_long, id_columns=["id"], fields=[FieldSpec(key="f")])
        ):
            pass
