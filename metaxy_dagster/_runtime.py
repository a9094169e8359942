"""What ops, checks and sensors do when they run: rebuild everything from config, files and the store.

Nothing is shared in memory between ops: each one reloads the configuration, the feature graph (entrypoints),
its migration file and the store, so Dagster may run it in any process or on any host.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import AssetKey

from metaxy_core.config import MetaxyConfig
from metaxy_core.errors import MetaxyError, redact
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import LockedError, Migration, MigrationFailed, load_migration_file
from metaxy_core.migrations.chain import MigrationChain
from metaxy_core.migrations.executor import MigrationEditedError, MigrationExecutor, ParentNotAppliedError
from metaxy_core.migrations.lock import StoreLock
from metaxy_core.store.delta import DeltaMetadataStore
from metaxy_dagster import events
from metaxy_dagster.errors import (
    MetaxyDagsterError,
    MetaxyDefinitionsError,
    MetaxyMigrationChangedError,
    MetaxyMigrationFailedError,
    MetaxyParentNotAppliedError,
    MetaxyRunError,
    MetaxyStoreLockedError,
)

if TYPE_CHECKING:
    from metaxy_dagster.resources import MetaxyStoreResource


@dataclass(frozen=True)
class MigrationRef:
    """What a definition remembers about a migration: enough to find and verify it again at run time."""

    migration_id: str
    source_path: Path | None
    checksum: str
    parents: tuple[str, ...]
    op_labels: tuple[tuple[str, str], ...]
    _fallback: Migration | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, migration: Migration) -> MigrationRef:
        return cls(
            migration_id=migration.migration_id,
            source_path=migration.source_path,
            checksum=migration.checksum,
            parents=migration.parents,
            op_labels=tuple(migration.operation_labels()),
            _fallback=None if migration.source_path is not None else migration,
        )

    def load(self) -> Migration:
        """Reload the migration from its file and make sure it is the one the definitions were built from.

        Raises:
            MetaxyMigrationChangedError: the file changed since the code location was loaded.
        """
        if self.source_path is None:
            assert self._fallback is not None
            return self._fallback
        migration = load_migration_file(self.source_path)
        if migration.checksum != self.checksum:
            raise MetaxyMigrationChangedError(
                f"{self.source_path} changed since the Dagster code location was loaded (checksum "
                f"{self.checksum} -> {migration.checksum}); reload the code location so its assets match the "
                "file, then launch the run again"
            )
        return migration


@dataclass
class ChainRefs:
    """What every op of a code location knows about the chain, fixed when the definitions load: the
    migrations (as refs) in chain order, their asset keys, the feature assets, and whether to count rows.

    A dry run in an asset job plans the selected migrations its first op can reach from it (see
    :mod:`metaxy_dagster.ops`), so ops need the whole chain, not only their own migration.
    """

    refs: dict[str, MigrationRef] = field(default_factory=dict)
    keys: dict[str, AssetKey] = field(default_factory=dict)
    feature_keys: Mapping[str, AssetKey] = field(default_factory=dict)
    default_feature_key: Callable[[FeatureKey], AssetKey] | None = None
    count_rows: bool = True

    def feature_key(self, feature: str) -> AssetKey:
        """The asset standing for ``feature`` (also for a feature the code's graph no longer has)."""
        known = self.feature_keys.get(feature)
        if known is not None:
            return known
        if self.default_feature_key is not None:
            return self.default_feature_key(FeatureKey(feature))
        return AssetKey(list(FeatureKey(feature).parts))

    @property
    def order(self) -> list[str]:
        return list(self.refs)

    def selected(self, asset_keys: Iterable[AssetKey]) -> list[str]:
        """Migration ids among ``asset_keys``, in chain order."""
        wanted = set(asset_keys)
        return [mid for mid, key in self.keys.items() if key in wanted]

    def roots(self, selected: list[str]) -> list[str]:
        """The selected migrations none of whose parents is selected: in a dry run, the only ones whose ops
        run (a planned migration is not materialized, so Dagster skips what follows it in the run)."""
        chosen = set(selected)
        return [mid for mid in selected if not any(p in chosen for p in self.refs[mid].parents)]


@contextmanager
def definition_errors(migration: Migration) -> Iterator[None]:
    """Errors raised while building a migration's definitions (a translator override, a PythonMigration's
    ``build_operations``) as :class:`MetaxyDefinitionsError` naming the migration's file."""
    try:
        yield
    except MetaxyDagsterError:
        raise
    except MetaxyError as exc:
        raise MetaxyDefinitionsError(str(exc), error=exc) from exc
    except Exception as exc:
        where = migration.source_path or migration.migration_id
        raise MetaxyDefinitionsError(
            f"{where}: {type(exc).__name__} while building its Dagster definitions: {exc}; fix the migration "
            "(its build_operations() must not need the store) or the translator",
            error=exc,
        ) from exc


@contextmanager
def metaxy_errors(secrets: list[str] | None = None) -> Iterator[None]:
    """Turn engine errors into :class:`MetaxyDagsterError` failures that keep the engine's message.

    The engine error is kept on ``.error`` but not chained (``from None``): Dagster serialises an exception's
    causes into the event log, and the original error of a user operation may quote credentials that only
    the engine's redacted message leaves out.
    """
    secrets = secrets or []
    try:
        yield
    except MetaxyDagsterError:
        raise
    except MigrationFailed as exc:
        message = redact(str(exc), secrets)
        raise MetaxyMigrationFailedError(
            message + " In Dagster: re-execute the run from failure to resume at this operation.",
            metadata=events.failure_metadata(exc.result, secrets),
            error=exc,
        ) from None
    except LockedError as exc:
        raise MetaxyStoreLockedError(redact(str(exc), secrets), error=exc) from None
    except ParentNotAppliedError as exc:
        raise MetaxyParentNotAppliedError(
            f"migration {exc.migration_id} follows {exc.parent}, which is "
            f"{exc.parent_status.replace('_', ' ')} in {exc.store_uri}; apply {exc.parent} first "
            "(materialize its asset, or select it in the same run)",
            error=exc,
        ) from None
    except MigrationEditedError as exc:
        raise MetaxyMigrationChangedError(
            redact(str(exc), secrets) + ". In Dagster, --force is the run configuration "
            "resources.metaxy_run.config.force: true",
            error=exc,
        ) from None
    except MetaxyError as exc:
        raise MetaxyRunError(redact(str(exc), secrets), error=exc) from None


@dataclass
class MetaxyRun:
    """What an op, a check or a sensor works with: the configuration and store, built in the process that
    runs it (the one run set-up path; see :func:`open_run`)."""

    config: MetaxyConfig
    store: DeltaMetadataStore

    @property
    def secrets(self) -> list[str]:
        """Values to redact from anything shown to users."""
        return self.store.secrets

    @cached_property
    def graph(self) -> FeatureGraph:
        """The code's feature graph (the entrypoints imported once per run)."""
        return self.config.load_features()

    def load_chain(self) -> MigrationChain:
        """The migration chain from the files (never the store)."""
        return self.config.load_chain(self.graph)

    def executor(self, **kwargs: Any) -> MigrationExecutor:
        """A :class:`MigrationExecutor` over the store and the code's graph (``run_id``, ``force``, ...)."""
        return MigrationExecutor(self.store, project=self.store.project, graph=self.graph, **kwargs)

    def errors(self) -> AbstractContextManager[None]:
        """:func:`metaxy_errors` with this run's secrets: wrap every engine call in it."""
        return metaxy_errors(self.secrets)


def run_lease(
    run_id: str, root_run_id: str | None, store: DeltaMetadataStore, *, member: bool = False
) -> StoreLock:
    """The store lease of a Dagster run, as one of its step processes holds it.

    Its owner is the run's *root* run id, so a re-execution from failure joins the lease its first attempt
    left (same token) instead of waiting for it. Its liveness follows the process that orchestrates the run
    (the parent of a step process spawned by the multiprocess executor), which outlives every step: a lease
    whose last renewal came from a finished step would otherwise look abandoned to a contender on this host.
    ``member`` steps (units of work) only join it (see :class:`~metaxy_core.migrations.lock.StoreLock`).
    """
    pid = os.getppid() if multiprocessing.parent_process() is not None else os.getpid()
    return StoreLock(store, root_run_id or run_id, member=member, pid=pid)


def open_run(resource: MetaxyStoreResource) -> MetaxyRun:
    """Build the configuration and store from ``resource``, with their errors (a missing or invalid config
    file, bad storage options) raised as :class:`MetaxyDagsterError`, like every later engine error."""
    with metaxy_errors():
        config = resource.get_config()
        store = config.get_store()
    return MetaxyRun(config, store)
