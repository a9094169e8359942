"""The write scope: which migration step the store's writes belong to, and whether they are allowed at all.

The executor opens a scope per step (:meth:`DeltaMetadataStore.write_scope`); every write inside it, made by
``write_metadata`` or by a bulk writer such as reconciliation, goes through :func:`begin_write`, which

* refuses the write in a dry-run scope (so a dry run leaves every table version unchanged even if an
  operation forgets to check ``dry_run``),
* gives the step's write id (what rollback uses to hide a migration's rows),
* counts the rows per feature (what the migration log records for the step).

The scope lives in a context variable, so concurrent steps (threads, asyncio tasks) each see their own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from metaxy_core.errors import DryRunWriteError
from metaxy_core.graph.keys import FeatureKey


@dataclass
class WriteScope:
    """Attributes every write made inside it (a migration step) to one write id, and counts the rows.

    The write id is what rollback uses to hide a migration's rows; a dry-run scope refuses writes, which
    guarantees that a dry run leaves every table version unchanged even if user code forgets to check.
    """

    write_id: str
    dry_run: bool = False
    rows_by_feature: dict[str, int] = field(default_factory=dict)


_SCOPE: contextvars.ContextVar[WriteScope | None] = contextvars.ContextVar("metaxy_write_scope", default=None)


@contextmanager
def write_scope(write_id: str, *, dry_run: bool = False) -> Iterator[WriteScope]:
    """Attribute writes in this block to ``write_id`` (or refuse them in a dry run)."""
    scope = WriteScope(write_id=write_id, dry_run=dry_run)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


@dataclass(frozen=True)
class FeatureWrite:
    """Permission to write rows of one feature in the current scope (none outside a migration step).

    ``write_id`` is the step's write id (None outside a step: the writer picks a fresh one); :meth:`count`
    adds committed rows to the step's tally.
    """

    key: FeatureKey
    scope: WriteScope | None

    @property
    def write_id(self) -> str | None:
        return self.scope.write_id if self.scope is not None else None

    def count(self, rows: int) -> None:
        """Record ``rows`` committed for this feature (call once per commit, after it succeeded)."""
        if self.scope is not None:
            name = self.key.to_string()
            self.scope.rows_by_feature[name] = self.scope.rows_by_feature.get(name, 0) + rows


def begin_write(key: FeatureKey) -> FeatureWrite:
    """Start writing rows of ``key`` in the current write scope.

    Raises:
        DryRunWriteError: the current scope is a dry run; operations must check ``dry_run`` and only count
            the rows they would write.
    """
    scope = _SCOPE.get()
    if scope is not None and scope.dry_run:
        raise DryRunWriteError(
            f"a write to feature {key} was attempted during a dry run (step {scope.write_id}); "
            "operations must check `dry_run` and only count the rows they would write"
        )
    return FeatureWrite(key, scope)
