"""The migration chain: migrations linked by ``parent``, validated as a whole.

Pure data: no I/O. A chain is a line, or a line that branched and was joined again by a *merge migration*
(``parent: [a, b]``, Alembic's tuple ``down_revision``): a graph with one first migration per line of history
and exactly one head. Its order is topological (a migration after every migration it follows; ties by id, i.e.
by time), so a merge migration is applied after all of its parents. Each way a chain can be broken has its own
error naming the files involved and the fix.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from metaxy_core.errors import MetaxyError
from metaxy_core.migrations.models import Migration


class ChainError(MetaxyError):
    """The migrations do not form one chain."""


class DuplicateMigrationError(ChainError):
    def __init__(self, migration_id: str, paths: list[str]) -> None:
        self.migration_id, self.paths = migration_id, paths
        super().__init__(
            f"migration id {migration_id} is defined more than once ({', '.join(paths)}); every migration "
            "needs a unique id: rename one file (and its id) with a new timestamp"
        )


class MultipleRootsError(ChainError):
    def __init__(self, ids: list[str], paths: list[str]) -> None:
        self.ids = ids
        super().__init__(
            f"several migrations start the chain (parent: initial): {', '.join(paths)}; only the first may; "
            "set the parent of the others to the migration they follow, or join the lines with "
            "`metaxy migrations generate --merge`"
        )


class NoRootError(ChainError):
    def __init__(self, paths: list[str]) -> None:
        super().__init__(
            f"no migration has `parent: initial` ({', '.join(paths)}); set the first migration's parent to "
            "initial"
        )


class MissingParentError(ChainError):
    def __init__(self, migration_id: str, parent: str, path: str, known: list[str]) -> None:
        self.migration_id, self.parent = migration_id, parent
        super().__init__(
            f"{path}: parent {parent} does not exist (known migrations: {', '.join(known) or 'none'}); point "
            "`parent` at an existing migration (normally the current head) or restore the missing file"
        )


class ForkError(ChainError):
    """The chain has several heads (Alembic's MultipleHeads): two branches each added a migration.

    ``heads`` are their ids (oldest first); ``parent`` is the newest migration both branches follow.
    """

    def __init__(self, parent: str, heads: list[str], paths: list[str], *, siblings: bool = True) -> None:
        self.parent, self.heads = parent, heads
        where = f"all have parent {parent}" if siblings else f"are separate heads after {parent}"
        rebase = (
            f"set the parent of the later one to {heads[0]}"
            if siblings
            else "point the first migration of one branch at the other branch's head"
        )
        super().__init__(
            f"the chain forks: {', '.join(paths)} {where}; migrations must end in one head, so join the "
            "heads with a merge migration (run `metaxy migrations generate --merge`; `metaxy migrations "
            f"heads` lists them) or {rebase}"
        )


class MigrationCycleError(ChainError):
    def __init__(self, ids: list[str], paths: list[str]) -> None:
        self.ids = ids
        super().__init__(
            f"migrations form a cycle through their parents: {', '.join(paths)}; break it by giving the "
            "oldest one `parent: initial` or the migration it really follows"
        )


class UnknownMigrationError(ChainError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def _where(m: Migration) -> str:
    return str(m.source_path) if m.source_path else m.migration_id


class MigrationChain:
    """Migrations in apply order, from the first (``parent: initial``) to the one head.

    Args:
        migrations: the project's migrations, in any order.
        allow_forks: accept several heads (``metaxy migrations heads`` and ``generate --merge`` load a forked
            chain to join it); :attr:`head` then raises the :class:`ForkError`.

    Raises (on construction): :class:`DuplicateMigrationError`, :class:`MissingParentError`,
    :class:`NoRootError`, :class:`MigrationCycleError`, and unless ``allow_forks``, :class:`ForkError` or
    :class:`MultipleRootsError`.
    """

    def __init__(self, migrations: Iterable[Migration], *, allow_forks: bool = False) -> None:
        items = list(migrations)
        by_id: dict[str, Migration] = {}
        for m in items:
            if m.migration_id in by_id:
                same = [_where(x) for x in items if x.migration_id == m.migration_id]
                raise DuplicateMigrationError(m.migration_id, same)
            by_id[m.migration_id] = m
        self._by_id = by_id
        self._children: dict[str, list[str]] = {m.migration_id: [] for m in items}
        self._ordered = self._order(items) if items else []
        self._position = {m.migration_id: i for i, m in enumerate(self._ordered)}
        self._fork: ChainError | None = self._fork_error() if len(self.heads) > 1 else None
        if self._fork is not None and not allow_forks:
            raise self._fork

    def _order(self, items: list[Migration]) -> list[Migration]:
        by_id = self._by_id
        for m in sorted(items, key=lambda x: x.migration_id):
            for parent in m.parents:
                if parent not in by_id:
                    raise MissingParentError(m.migration_id, parent, _where(m), sorted(by_id))
                self._children[parent].append(m.migration_id)
        waiting = {m.migration_id: len(m.parents) for m in items}
        ready = [m.migration_id for m in items if not m.parents]
        if not ready:
            raise NoRootError([_where(m) for m in sorted(items, key=lambda x: x.migration_id)])
        heapq.heapify(ready)
        ordered: list[Migration] = []
        while ready:  # Kahn's algorithm; among migrations ready together the oldest id goes first
            migration_id = heapq.heappop(ready)
            ordered.append(by_id[migration_id])
            for child in self._children[migration_id]:
                waiting[child] -= 1
                if not waiting[child]:
                    heapq.heappush(ready, child)
        if len(ordered) != len(items):
            seen = {m.migration_id for m in ordered}
            rest = sorted((m for m in items if m.migration_id not in seen), key=lambda x: x.migration_id)
            raise MigrationCycleError([m.migration_id for m in rest], [_where(m) for m in rest])
        return ordered

    def _fork_error(self) -> ChainError:
        heads = self.heads
        common = set.intersection(*({h.migration_id, *self._ancestor_ids(h.migration_id)} for h in heads))
        if not common:
            roots = [m for m in self._ordered if not m.parents]
            return MultipleRootsError([r.migration_id for r in roots], [_where(r) for r in roots])
        branch_point = max(common, key=self._position.__getitem__)
        siblings = all(h.parents == (branch_point,) for h in heads)
        return ForkError(
            branch_point, [h.migration_id for h in heads], [_where(h) for h in heads], siblings=siblings
        )

    # ------------------------------------------------------------------ queries
    def __iter__(self) -> Iterator[Migration]:
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    def __contains__(self, migration_id: object) -> bool:
        return migration_id in self._by_id

    @property
    def ids(self) -> list[str]:
        return [m.migration_id for m in self._ordered]

    @property
    def heads(self) -> list[Migration]:
        """Migrations no other migration follows, in chain order: one in a valid chain."""
        return [m for m in self._ordered if not self._children[m.migration_id]]

    @property
    def head(self) -> Migration | None:
        """The newest migration (None for an empty chain).

        Raises:
            ForkError: the chain was loaded with ``allow_forks`` and has several heads.
        """
        if self._fork is not None:
            raise self._fork
        return self._ordered[-1] if self._ordered else None

    def get(self, migration_id: str) -> Migration:
        try:
            return self._by_id[migration_id]
        except KeyError:
            raise UnknownMigrationError(
                f"migration {migration_id} not found (known: {', '.join(self.ids) or 'none'}); run "
                "`metaxy migrations list` to see the chain"
            ) from None

    def index(self, migration_id: str) -> int:
        """Position of ``migration_id`` in apply order."""
        self.get(migration_id)
        return self._position[migration_id]

    def _ancestor_ids(self, migration_id: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.get(migration_id).parents)
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self._by_id[current].parents)
        return seen

    def _descendant_ids(self, migration_id: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self._children[self.get(migration_id).migration_id])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self._children[current])
        return seen

    def upto(self, migration_id: str | None) -> list[Migration]:
        """``migration_id`` and every migration it follows, directly or not, in apply order; all when None.

        On a line that is the chain's prefix; after a merge it includes both branches, and on one branch it
        leaves the other out (what ``apply MIGRATION_ID`` needs).
        """
        if migration_id is None:
            return list(self._ordered)
        wanted = self._ancestor_ids(migration_id) | {migration_id}
        return [m for m in self._ordered if m.migration_id in wanted]

    def descendants(self, migration_id: str) -> list[Migration]:
        """Every migration that follows ``migration_id``, directly or not, in apply order (what must be rolled
        back before it)."""
        wanted = self._descendant_ids(migration_id)
        return [m for m in self._ordered if m.migration_id in wanted]

    def parents_of(self, migration_id: str) -> list[Migration]:
        """The migrations ``migration_id`` follows (none for the first, several for a merge migration)."""
        return [self._by_id[p] for p in self.get(migration_id).parents]
