"""Errors raised by user code (a migration's methods, its validators, an operation), as one line.

Wherever metaxy calls code from a migration file or an operation class (``build_operations``,
``get_affected_features``, validators, ``execute``, ``run``), an exception must end in one ``FAILED:`` line
that names the file, the method and the error, never a raw traceback (``--raiseerr`` shows that, since the
original exception is chained). :func:`user_code_error` words that line; :func:`raising_function` finds which
of the user's functions raised, when the caller cannot know (a pydantic validator).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from metaxy_core.errors import MetaxyError, redact
from metaxy_core.migrations.results import ReportedFailure


class UserCodeError(MetaxyError):
    """Code of a migration file or an operation class raised; the message names the file and the method."""


def user_code_error(
    exc: BaseException, *, where: Path | str, method: str, secrets: Iterable[str] = ()
) -> UserCodeError:
    """The one-line error for ``exc`` raised by ``method`` of the migration at ``where``.

    Example:
        ``.metaxy/migrations/20250101_000000_x.py: get_affected_features() raised KeyError: 'video/raw'; fix
        the migration (run with --raiseerr for the traceback)``
    """
    detail = str(exc) or repr(exc)
    return UserCodeError(
        redact(
            f"{where}: {method} raised {type(exc).__name__}: {detail}; fix the migration (run with "
            "--raiseerr for the traceback)",
            secrets,
        )
    )


def raising_function(exc: BaseException, path: Path | str | None) -> str | None:
    """The name of the innermost function defined in the file ``path`` that ``exc`` (or the exception it
    wraps, for a pydantic error) passed through; None when no frame of that file is in its traceback."""
    if path is None:
        return None
    target = str(Path(path).resolve())
    found = None
    for error in _with_causes(exc):
        tb = error.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if str(Path(code.co_filename).resolve()) == target:
                found = code.co_name
            tb = tb.tb_next
        if found:
            return found
    return None


def _with_causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = [exc]
    errors = getattr(exc, "errors", None)
    if callable(errors):  # a pydantic ValidationError keeps the validator's own exception in ctx["error"]
        try:
            for err in errors():
                inner = (err.get("ctx") or {}).get("error")
                if isinstance(inner, BaseException):
                    out.append(inner)
        except Exception:  # noqa: BLE001 - best effort: the name is a courtesy, the message stands without it
            pass
    if exc.__cause__ is not None:
        out.append(exc.__cause__)
    elif exc.__context__ is not None:
        out.append(exc.__context__)
    return out


def located(exc: MetaxyError, migration: Any) -> MetaxyError:
    """The same error, prefixed with the migration's file so the user knows which one to fix (unchanged
    when its message names the file already, as a user-code error's does)."""
    where = str(migration.source_path or migration.migration_id)
    if str(exc).startswith(where):
        return exc
    message = f"{where}: {exc}"
    try:
        return type(exc)(message)
    except TypeError:  # errors whose constructor takes structured data
        return MetaxyError(message)


def step_error(exc: BaseException, method: str, secrets: Iterable[str] = ()) -> str:
    """How a failed step's error reads: ``S3Backfill.execute() raised ValueError: ...``, or, when the code
    returned a failed result instead of raising, that result's message."""
    if isinstance(exc, ReportedFailure):
        return redact(str(exc), secrets)
    return redact(f"{method} raised {type(exc).__name__}: {exc}", secrets)
