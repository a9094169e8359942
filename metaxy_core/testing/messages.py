"""A library's own wording, asked from the library, so tests pin our messages and not its phrasing.

Our errors embed pydantic's explanation of a bad value (``lock_ttl_seconds: <pydantic's words>``). A test that
spelled pydantic's words out would break on a pydantic release that rephrases them; it asks pydantic instead.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError


def pydantic_message(annotation: Any, value: Any) -> str:
    """What pydantic says when ``value`` fails ``annotation`` (the first error's ``msg``).

    Example:
        >>> pydantic_message(Annotated[float, Field(gt=0)], -1)
        'Input should be greater than 0'
    """
    try:
        TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    raise AssertionError(f"{value!r} is a valid {annotation!r}")
