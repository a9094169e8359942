"""The migration chain: one line of migrations linked by ``parent``, validated as a whole.

Pure data: no I/O. Each way a chain can be broken has its own error naming the files involved and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from metaxy_core.errors import MetaxyError
from metaxy_core.migrations.models import INITIAL, Migration


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
            "set the parent of the others to the migration they follow"
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
    """Several migrations share one parent: the chain has several heads (Alembic's MultipleHeads)."""

    def __init__(self, parent: str, children: list[str], paths: list[str]) -> None:
        self.parent, self.heads = parent, children
        super().__init__(
            f"the chain forks: {', '.join(paths)} all have parent {parent}; migrations must form one line, "
            f"so set the parent of the later one to {children[0]}"
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
    """Migrations ordered from the first (``parent: initial``) to the head.

    Raises (on construction): :class:`DuplicateMigrationError`, :class:`MultipleRootsError`,
    :class:`NoRootError`, :class:`MissingParentError`, :class:`ForkError`, :class:`MigrationCycleError`.
    """

    def __init__(self, migrations: Iterable[Migration]) -> None:
        items = list(migrations)
        by_id: dict[str, Migration] = {}
        for m in items:
            if m.migration_id in by_id:
                same = [_where(x) for x in items if x.migration_id == m.migration_id]
                raise DuplicateMigrationError(m.migration_id, same)
            by_id[m.migration_id] = m
        self._by_id = by_id
        self._ordered = self._order(items) if items else []

    def _order(self, items: list[Migration]) -> list[Migration]:
        by_id = self._by_id
        for m in sorted(items, key=lambda x: x.migration_id):
            if m.parent != INITIAL and m.parent not in by_id:
                raise MissingParentError(m.migration_id, m.parent, _where(m), sorted(by_id))
        children: dict[str, list[Migration]] = {}
        for m in items:
            children.setdefault(m.parent, []).append(m)
        for parent, kids in sorted(children.items()):
            if len(kids) > 1 and parent != INITIAL:
                kids = sorted(kids, key=lambda x: x.migration_id)
                raise ForkError(parent, [k.migration_id for k in kids], [_where(k) for k in kids])
        roots = sorted(children.get(INITIAL, []), key=lambda x: x.migration_id)
        if len(roots) > 1:
            raise MultipleRootsError([r.migration_id for r in roots], [_where(r) for r in roots])
        if not roots:
            raise NoRootError([_where(m) for m in sorted(items, key=lambda x: x.migration_id)])
        ordered = [roots[0]]
        while kids := children.get(ordered[-1].migration_id):
            ordered.append(kids[0])
        if len(ordered) != len(items):
            seen = {m.migration_id for m in ordered}
            rest = sorted((m for m in items if m.migration_id not in seen), key=lambda x: x.migration_id)
            raise MigrationCycleError([m.migration_id for m in rest], [_where(m) for m in rest])
        return ordered

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
    def head(self) -> Migration | None:
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
        return self.ids.index(self.get(migration_id).migration_id)

    def upto(self, migration_id: str | None) -> list[Migration]:
        """Migrations from the first to ``migration_id`` (inclusive); all when None."""
        if migration_id is None:
            return list(self._ordered)
        return self._ordered[: self.index(migration_id) + 1]

    def descendants(self, migration_id: str) -> list[Migration]:
        return self._ordered[self.index(migration_id) + 1 :]

    def parent_of(self, migration_id: str) -> Migration | None:
        parent = self.get(migration_id).parent
        return None if parent == INITIAL else self._by_id[parent]
