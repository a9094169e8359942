"""The write scope: which migration step the store's writes belong to, and whether they are allowed at all.

The executor opens a scope per step (:meth:`DeltaMetadataStore.write_scope`); every write inside it, made by
``write_metadata`` or by a bulk writer such as reconciliation, goes through :func:`begin_write`, which

* refuses the write in a dry-run scope (so a dry run leaves every table version unchanged even if an
  operation forgets to check ``dry_run``),
* gives the step's write id (what rollback uses to hide a migration's rows),
* counts the rows per feature (what the migration log records for the step).

The scope lives in a context variable, so concurrent steps (threads, asyncio tasks) each see their own.

A :class:`Fence` (set by the migration lock with :func:`fenced` while a lease is held) makes every commit of
the store in that context carry the lease's token as a Delta app transaction and check the lease first, so a
holder whose lease was taken over cannot commit (see :mod:`metaxy_core.migrations.lock`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from metaxy_core.errors import DryRunWriteError
from metaxy_core.graph.keys import FeatureKey


@dataclass(frozen=True)
class Fence:
    """A lease's fencing token: what every commit made under the lease carries and checks.

    ``root`` is the store the lease guards (commits to other stores ignore it), ``app_id`` names the Delta
    app transaction (one per project), ``token`` is the lease's token (it grows with every acquisition).
    ``check(table_token)`` is called before each commit with the token the table's log last recorded for
    ``app_id`` (None if none); it raises when the lease is no longer ours (a newer token wrote the table, or
    the lock table shows another lease). Delta itself refuses the commit if a commit with a newer token lands
    between the check and the commit.
    """

    root: str
    app_id: str
    token: int
    check: Callable[[int | None], None]

    def guards(self, uri: str) -> bool:
        """Whether a commit to the table at ``uri`` is made under this lease (a table of its store)."""
        return uri.startswith(self.root.rstrip("/") + "/")


_FENCE: contextvars.ContextVar[Fence | None] = contextvars.ContextVar("metaxy_fence", default=None)


def current_fence() -> Fence | None:
    """The fence of the lease held in this context (None outside a lease).

    A writer that commits from another thread (the bulk writer) takes it here and passes it along.
    """
    return _FENCE.get()


@contextmanager
def fenced(fence: Fence | None) -> Iterator[None]:
    """Make every store commit in this block carry ``fence`` (None: no fence)."""
    token = _FENCE.set(fence)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # closed from another context: an unreleased lease collected
            _FENCE.reset(token)


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
    #: the lease's fence in the writer's context (pass it to commits made from other threads)
    fence: Fence | None = None

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
    return FeatureWrite(key, scope, current_fence())
