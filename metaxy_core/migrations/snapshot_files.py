"""Feature-graph snapshots as files beside the migrations: ``.metaxy/snapshots/<snapshot version>.json``.

A migration is written against two snapshots (``from_snapshot_version`` -> ``to_snapshot_version``), not
against whatever the code declares today. The store keeps every pushed snapshot, but Dagster loads a code
location from files only (no store, no credentials), and an applied migration must stay loadable after the
code has moved on. So the snapshots a migration names travel with it in the repository: ``metaxy push`` and
``metaxy migrations generate`` write them here, the loader reads them, and a missing or edited file is an
error naming the file and the command that writes it.

A file is :meth:`FeatureGraph.to_snapshot` as JSON; reading it rebuilds the graph and checks that it still
hashes to the version in its name, so a hand-edited file fails loudly instead of steering a migration.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from metaxy_core.errors import FileError, MetaxyError
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.versions import digest, snapshot_version_payload

#: folder name of the snapshot files, a sibling of the migrations folder (``.metaxy/snapshots``)
SNAPSHOTS_DIRNAME = "snapshots"
#: the command that writes snapshot files (named by every error about a missing one)
WRITE_COMMAND = "metaxy push"

_VERSION = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Parsed graphs by (path, mtime_ns, size): a code location with hundreds of migrations naming the same few
# snapshots parses each file once per process.
_CACHE: dict[tuple[str, int, int], FeatureGraph] = {}
_SUMMARIES: dict[tuple[str, int, int], SnapshotSummary] = {}
_CACHE_LOCK = threading.Lock()


class SnapshotFileError(FileError):
    """A snapshot file is missing, unreadable or does not hash to its version (the message names it)."""


def snapshots_dir(migrations_dir: Path | str) -> Path:
    """Where the snapshot files of the migrations in ``migrations_dir`` live: its sibling ``snapshots``."""
    return Path(migrations_dir).parent / SNAPSHOTS_DIRNAME


class SnapshotFiles:
    """The snapshot files of one project (a folder of ``<version>.json``).

    Example:
        >>> files = SnapshotFiles(snapshots_dir(config.migrations_path))
        >>> files.write(FeatureGraph.get_active())
        >>> files.load("be4f3514d857d105").snapshot_version
        'be4f3514d857d105'
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"SnapshotFiles({str(self.directory)!r})"

    def path(self, version: str) -> Path:
        """The file of snapshot ``version`` (which must look like a version: no path can be smuggled in)."""
        if not _VERSION.fullmatch(str(version)):
            raise MetaxyError(
                f"{version!r} is not a snapshot version (letters, digits, '_' or '-'); check the migration's "
                "from_snapshot_version / to_snapshot_version"
            )
        return self.directory / f"{version}.json"

    def has(self, version: str) -> bool:
        return self.path(version).is_file()

    def load(self, version: str, *, needed_by: str | None = None) -> FeatureGraph:
        """The graph of snapshot ``version``, from its file.

        Args:
            version: the snapshot version.
            needed_by: who needs it (``"migration X (its target snapshot)"``), for the error message.

        Raises:
            SnapshotFileError: the file is missing (the message names ``metaxy push``), unreadable, or
                does not rebuild to ``version``.
        """
        path = self.path(version)
        try:
            stat = path.stat()
        except FileNotFoundError:
            who = f"{needed_by} needs it" if needed_by else "it is needed"
            raise SnapshotFileError(
                path,
                f"snapshot {version} is missing ({who}, and Dagster reads snapshots from files, never "
                f"the store); run `{WRITE_COMMAND}` with the store that holds it (it writes the snapshot "
                "files of the code and of every snapshot the migrations name), then commit "
                f"{self.directory.name}/ with the migrations",
            ) from None
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is not None:
            return cached
        graph = _parse(path, version)
        with _CACHE_LOCK:
            _CACHE[key] = graph
        return graph

    def summary(self, version: str, *, needed_by: str | None = None) -> SnapshotSummary:
        """The feature versions and dependencies of snapshot ``version`` (see :class:`SnapshotSummary`).

        Raises:
            SnapshotFileError: as :meth:`load`; also when the stored feature versions do not hash to
                ``version``.
        """
        path = self.path(version)
        try:
            stat = path.stat()
        except FileNotFoundError:
            self.load(version, needed_by=needed_by)  # raises the missing-file error
            raise
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with _CACHE_LOCK:
            cached = _SUMMARIES.get(key)
        if cached is not None:
            return cached
        data = _read(path, version)
        try:
            versions = {str(f["key"]): str(f["feature_version"]) for f in data["features"]}
            upstream = {
                str(f["key"]): [str(d["feature"]) for d in f.get("deps") or ()] for f in data["features"]
            }
        except (KeyError, TypeError) as exc:
            raise SnapshotFileError(
                path, f"is not a metaxy snapshot (a feature lacks {exc}); {_FIX}"
            ) from None
        found = digest(snapshot_version_payload(versions))
        if found != version:
            raise SnapshotFileError(
                path, f"snapshot {version}: its feature versions hash to {found}, not {version}; {_FIX}"
            )
        summary = SnapshotSummary(versions, upstream)
        with _CACHE_LOCK:
            _SUMMARIES[key] = summary
        return summary

    def write(self, graph: FeatureGraph) -> Path | None:
        """Write ``graph``'s snapshot file; an intact existing file is kept (returns ``None``), a damaged
        one is replaced. Written atomically (a crash never leaves half a file)."""
        path = self.path(graph.snapshot_version)
        if path.is_file():
            try:
                _parse(path, graph.snapshot_version)
                return None
            except SnapshotFileError:
                pass  # damaged: rewrite it from the graph
        return write_snapshot(path, graph.to_snapshot())


class SnapshotSummary:
    """The versions and dependencies of a snapshot's features, read without rebuilding its graph.

    Enough for :func:`~metaxy_core.migrations.models.diff_affected` (it answers ``keys``, ``in``,
    ``feature_version``, ``downstream`` and ``topological_order``, with ``"a/b"`` string keys): Dagster draws
    the lineage of hundreds of migrations from their snapshot files at every load, and rebuilding each graph
    (validating every spec, hashing every field) costs ~10 ms per 200 features. The stored feature versions
    are checked against the snapshot version they must hash to, so an edited file still fails; the full check
    (field by field) happens wherever the graph itself is used.
    """

    def __init__(self, versions: dict[str, str], upstream: dict[str, list[str]]) -> None:
        self._versions = versions  # in topological order
        self._upstream = upstream

    @classmethod
    def of(cls, graph: FeatureGraph) -> SnapshotSummary:
        order = graph.topological_order()
        return cls(
            {str(k): graph.feature_version(k) for k in order},
            {str(k): [str(u) for u in graph.upstream(k)] for k in order},
        )

    @property
    def keys(self) -> list[str]:
        return list(self._versions)

    def __contains__(self, key: object) -> bool:
        return str(key) in self._versions

    def feature_version(self, key: object) -> str:
        return self._versions[str(key)]

    def topological_order(self, keys: Iterable[object] | None = None) -> list[str]:
        if keys is None:
            return list(self._versions)
        wanted = {str(k) for k in keys}
        return [k for k in self._versions if k in wanted]

    def downstream(self, keys: Iterable[object]) -> list[str]:
        seeds = {str(k) for k in keys}
        reached: set[str] = set()
        for key in self._versions:
            if key not in seeds and any(u in seeds or u in reached for u in self._upstream[key]):
                reached.add(key)
        return [k for k in self._versions if k in reached]


class UnavailableGraph(FeatureGraph):
    """Stands for a snapshot graph that cannot be read: any use raises why (and how to fix it).

    A PythonMigration's ``build_operations`` runs with its target graph active; when that graph's file is
    missing, code that never reads the graph still works, and code that does gets the missing-file error at
    the line that reads it, never the wrong (current) graph.
    """

    def __init__(self, error: MetaxyError) -> None:  # no super().__init__: it holds no features
        object.__setattr__(self, "_error", error)

    def __getattribute__(self, name: str) -> object:
        if name.startswith("__") or name in ("_error", "use"):
            return object.__getattribute__(self, name)
        error = object.__getattribute__(self, "_error")
        if isinstance(error, FileError):
            raise type(error)(error.path, error.detail)
        raise type(error)(str(error))

    def __repr__(self) -> str:
        return f"UnavailableGraph({object.__getattribute__(self, '_error')})"


def write_snapshot(path: Path, data: dict) -> Path:
    """``data`` as indented, key-sorted JSON at ``path`` (stable text: a re-write never shows in a diff)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask decides, as for any file
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_FIX = f"restore it from version control, or delete it and run `{WRITE_COMMAND}` with the store that holds it"


def _read(path: Path, version: str) -> dict:
    """The file's JSON, checked to be a snapshot of ``version``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotFileError(path, f"is not a readable snapshot ({exc}); {_FIX}") from None
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise SnapshotFileError(path, f"is not a metaxy snapshot (no `features` list); {_FIX}")
    if data.get("snapshot_version") != version:
        raise SnapshotFileError(
            path, f"holds snapshot {data.get('snapshot_version')!r}, not {version} as its name says; {_FIX}"
        )
    return data


def _parse(path: Path, version: str) -> FeatureGraph:
    fix = _FIX
    data = _read(path, version)
    try:
        return FeatureGraph.from_snapshot(data)
    except MetaxyError as exc:
        raise SnapshotFileError(path, f"{exc}; {fix}") from None
    except Exception as exc:  # a feature entry that no longer validates
        raise SnapshotFileError(path, f"does not describe a valid feature graph ({exc}); {fix}") from None


__all__ = [
    "SNAPSHOTS_DIRNAME",
    "SnapshotFileError",
    "SnapshotFiles",
    "SnapshotSummary",
    "UnavailableGraph",
    "snapshots_dir",
    "write_snapshot",
]
