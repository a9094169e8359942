"""Errors raised by metaxy_core.

Every error a user can trigger derives from :class:`MetaxyError`. Messages name the thing at fault (a file,
a feature, a migration id) and end with what to do about it, so the CLI can print them as they are and
Dagster can surface them as the failure description.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class MetaxyError(Exception):
    """Base class of every error metaxy raises on purpose."""


class ConfigError(MetaxyError):
    """The project configuration (``metaxy.toml`` / ``[tool.metaxy]`` / ``METAXY_*``) is invalid."""


class InvalidKeyError(MetaxyError, ValueError):
    """A feature or field key is malformed (empty part, ``..``, path separator, ...)."""


class GraphError(MetaxyError):
    """The feature graph is inconsistent."""


class DuplicateFeatureError(GraphError):
    """Two features were declared with the same key in one graph."""


class UnknownDependencyError(GraphError):
    """A feature or field dependency names something that is not in the graph."""


class CycleError(GraphError):
    """Feature dependencies form a cycle."""


class FeatureNotFoundError(MetaxyError, KeyError):
    """A feature key is not part of the graph in use."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(MetaxyError):
    """The metadata store could not be read or written."""


class StoreUnreachableError(StoreError):
    """The store's root (bucket, endpoint, folder) cannot be reached with the given credentials."""


class MetadataSchemaError(StoreError):
    """A frame handed to the store does not have the columns/structure the feature requires."""


class SnapshotNotFoundError(StoreError):
    """A snapshot version was asked for that was never pushed to the store."""


class MetadataNotFoundError(StoreError):
    """A feature has no metadata in the store yet."""


class DryRunWriteError(MetaxyError):
    """Something tried to write to the store inside a dry run."""


class FileError(MetaxyError):
    """An error tied to one file; the message always starts with the file's path."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        self.detail = message
        super().__init__(f"{path}: {message}")


def format_validation_error(exc: ValidationError, *, verbatim: bool = False) -> str:
    """A pydantic error as one ``location: problem`` per error, joined by ``"; "`` (the one formatter).

    Unknown keys get a hint (``unknown key; remove it or check its spelling``), missing fields say so plainly
    and pydantic's ``Value error, `` prefix is dropped, so a message reads as the validator wrote it.

    Args:
        exc: the validation error.
        verbatim: keep pydantic's own messages (``Field required``, ``Value error, ...``) and write the hint
            as ``unknown key, remove it or check its spelling``: the wording of configuration errors.

    Example:
        >>> format_validation_error(exc)  # doctest: +SKIP
        'colour: unknown key; remove it or check its spelling; count: required field is missing'
    """
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            hint = "unknown key, remove it" if verbatim else "unknown key; remove it"
            parts.append(f"{loc}: {hint} or check its spelling")
        elif err["type"] == "missing" and not verbatim:
            parts.append(f"{loc}: required field is missing")
        else:
            msg = err["msg"] if verbatim else err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove secret values (and passwords embedded in URLs) from ``text`` (the one secret scrubber).

    Every message built from a delta-rs/boto3/operation exception passes through here before it is shown,
    logged or stored, whichever layer shows it (store errors, the executor, the CLI, Dagster events).

    Args:
        text: a message or traceback.
        secrets: values to replace by ``***`` (a store's ``secrets``: keys, tokens, passwords).
    """
    for secret in sorted(set(secrets) | _REGISTERED, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


#: values registered with :func:`register_secret`; every :func:`redact` call scrubs them
_REGISTERED: set[str] = set()

#: shorter values are not registered: scrubbing them would garble every number and word in messages, and a
#: value that short protects nothing
MIN_SECRET_LENGTH = 4


def register_secret(value: str) -> None:
    """Scrub ``value`` from every message :func:`redact` handles from now on, in this process.

    For values that reach metaxy through configuration and are not known to be harmless, such as the
    ``${VAR}`` substitutions in migration operations: they may hold a password, and a validator or an
    operation may quote them in an error. Values shorter than :data:`MIN_SECRET_LENGTH` are ignored.
    """
    if len(value) >= MIN_SECRET_LENGTH:
        _REGISTERED.add(value)
