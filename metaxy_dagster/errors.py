"""Errors raised by metaxy_dagster.

Every error derives from :class:`MetaxyDagsterError`, a :class:`dagster.Failure`: raised inside an op or a
check, Dagster shows its description (the same text the ``metaxy`` CLI prints) and its metadata instead of a
bare traceback. The subclasses that wrap an engine error also derive from
:class:`metaxy_core.errors.MetaxyError`, so code that already handles metaxy errors keeps working, and they
keep the engine error as ``__cause__`` and :attr:`MetaxyDagsterError.error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import Failure

from metaxy_core.errors import MetaxyError


class MetaxyDagsterError(Failure):
    """Base class of the errors raised by metaxy_dagster.

    Args:
        description: the message; for wrapped engine errors it is the engine's message verbatim.
        metadata: Dagster metadata shown with the failure (``metaxy/...`` keys).
        error: the engine error this one wraps, if any.
    """

    def __init__(
        self,
        description: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
        allow_retries: bool | None = None,
    ) -> None:
        super().__init__(description=description, metadata=metadata, allow_retries=allow_retries)
        self.error = error

    def __str__(self) -> str:
        return self.description or ""


class MetaxyDefinitionsError(MetaxyDagsterError, MetaxyError):
    """Definitions cannot be built: a migration file is invalid, the chain is broken or the configuration is
    bad.

    The message is the engine's message, unchanged (it names the file and the fix), so the code location
    error in Dagster reads exactly like ``metaxy migrations status`` on the command line.
    """


class MetaxyMigrationFailedError(MetaxyDagsterError, MetaxyError):
    """A migration operation failed; completed steps are kept, so re-executing from failure resumes here."""


class MetaxyStoreLockedError(MetaxyDagsterError, MetaxyError):
    """Another run holds the store's migration lock (the message names it)."""


class MetaxyMigrationChangedError(MetaxyDagsterError, MetaxyError):
    """The migration file changed (or its operations did) since the code location was loaded."""


class MetaxyParentNotAppliedError(MetaxyDagsterError, MetaxyError):
    """A migration was asked to run before the migration it follows was applied."""


class MetaxyPlanOnlyError(MetaxyDagsterError, MetaxyError):
    """The plan job was launched with ``dry_run: false``; it never writes."""


class MetaxyRunError(MetaxyDagsterError, MetaxyError):
    """Any other metaxy error raised while running an op, a check or a sensor (the engine's message)."""
