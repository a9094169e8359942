"""Feature and field keys.

Keys become Delta table folder names and appear in file names and Dagster asset keys, so they are validated
strictly at construction: a key that could escape the store root or collide with another key after encoding
is rejected before it reaches the disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from metaxy_core.errors import InvalidKeyError

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")

#: Longest key, counted as its table name (parts joined by ``__``). A feature key becomes a folder name in the
#: store (255 bytes on common file systems, with room for suffixes) and part of every object key on S3 (1024
#: bytes in all); a field key becomes a struct field and a column-name suffix. 200 leaves room for both.
MAX_KEY_LENGTH = 200


def _validate_part(part: object, kind: str, whole: object) -> str:
    if not isinstance(part, str):
        raise InvalidKeyError(f"{kind} key {whole!r}: every part must be a string, got {type(part).__name__}")
    if part == "":
        raise InvalidKeyError(f"{kind} key {whole!r} has an empty part; write parts like 'video/raw'")
    if part in (".", "..") or ".." in part:
        raise InvalidKeyError(f"{kind} key {whole!r}: '..' is not allowed in a key part")
    if "/" in part or "\\" in part:
        raise InvalidKeyError(f"{kind} key {whole!r}: a part may not contain a path separator")
    if "__" in part:
        raise InvalidKeyError(
            f"{kind} key {whole!r}: '__' is reserved (it joins key parts in table names); use a single '_'"
        )
    if not _PART.fullmatch(part):  # fullmatch: `$` would accept a trailing newline
        raise InvalidKeyError(
            f"{kind} key {whole!r}: part {part!r} must start with a letter or digit and contain only "
            "letters, digits, '_', '-' and '.'"
        )
    return part


class _Key:
    """A tuple of validated string parts; ``"a/b"``, ``["a", "b"]`` and another key all construct one."""

    __slots__ = ("parts",)
    _kind = "key"

    parts: tuple[str, ...]

    def __init__(self, key: str | Sequence[str] | _Key) -> None:
        if isinstance(key, _Key):
            parts: tuple[str, ...] = key.parts
        elif isinstance(key, str):
            parts = tuple(key.split("/"))
        elif isinstance(key, Iterable):
            parts = tuple(key)
        else:
            raise InvalidKeyError(
                f"{self._kind} key must be a string like 'a/b' or a list of parts, got {key!r}"
            )
        if not parts:
            raise InvalidKeyError(f"{self._kind} key may not be empty")
        checked = tuple(_validate_part(p, self._kind, key) for p in parts)
        length = sum(map(len, checked)) + 2 * (len(checked) - 1)
        if length > MAX_KEY_LENGTH:
            shown = "/".join(checked)
            raise InvalidKeyError(
                f"{self._kind} key {shown[:60]!r}... is {length} characters long as a table name "
                f"(parts joined by '__'); the limit is {MAX_KEY_LENGTH} "
                "(keys become folder and object names in the store); shorten it"
            )
        object.__setattr__(self, "parts", checked)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def to_string(self) -> str:
        return "/".join(self.parts)

    def to_table_name(self) -> str:
        """Folder-safe, injective encoding used for Delta table names and Dagster identifiers."""
        return "__".join(self.parts)

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_string()!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self):
            return self.parts == other.parts  # type: ignore[attr-defined]
        return NotImplemented

    def __lt__(self, other: _Key) -> bool:
        return self.parts < other.parts

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.parts))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def _coerce(value: Any) -> _Key:
            try:
                return cls(value)
            except InvalidKeyError as exc:
                raise ValueError(str(exc)) from None

        return core_schema.no_info_plain_validator_function(
            _coerce, serialization=core_schema.plain_serializer_function_ser_schema(lambda k: k.to_string())
        )


class FeatureKey(_Key):
    """Key of a feature, e.g. ``FeatureKey("video/raw")`` or ``FeatureKey(["video", "raw"])``."""

    _kind = "feature"


class FieldKey(_Key):
    """Key of a field within a feature, e.g. ``FieldKey("frames")``."""

    _kind = "field"


CoercibleToFeatureKey = str | Sequence[str] | FeatureKey
CoercibleToFieldKey = str | Sequence[str] | FieldKey
