"""Adopting a Metaxy 0.1.6 project: its snapshots as this project's graphs, its rows in this project's tables.

``metaxy migrations import-016 [SOURCE]`` reads a store written by Metaxy 0.1.6 (by default the configured
store's own root: 0.1.6 keeps its tables at ``video/raw.delta`` and its system tables under
``metaxy-system/``, so both layouts live side by side under one root) and:

1. rebuilds every 0.1.6 snapshot of the project (``metaxy-system/feature_versions``: one row per feature
   and snapshot, with the feature's spec) as this project's :class:`FeatureGraph`, pushes the ones the store
   does not know yet (oldest first, so the latest stays the latest) and writes them as snapshot files;
2. writes the map from 0.1.6's 8-hex snapshot ids to this project's snapshot versions
   (:data:`~metaxy_core.migrations.compat.SNAPSHOT_IDS_FILE` in the migrations folder), through which the
   loader reads the 0.1.6 migration files unchanged;
3. carries every feature's rows over, upstream first and oldest version first: user columns kept, each row
   stamped with the version of this project's graph its 0.1.6 feature version belongs to; a root feature
   keeps the provenance its rows brought, a downstream feature's is recomputed from the imported upstream
   rows (0.1.6 hashed differently). Samples already stored at that version are skipped, so a re-run after a
   crash or a partial import finishes the job without duplicates.

0.1.6 specs whose semantics this project does not have are refused naming the feature (a lineage other than
one-to-one); renames, column selections and SQL filters on dependencies do not change versions and are
ignored here (the rows already carry their effect).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from metaxy_core.errors import MetaxyError, redact
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.graph.spec import FeatureDep, FeatureSpec, FieldDep, FieldSpec
from metaxy_core.migrations import compat
from metaxy_core.migrations.snapshot_files import SnapshotFiles, snapshots_dir
from metaxy_core.store.buckets import Buckets, Partitioning, buckets_for
from metaxy_core.store.delta import DeltaMetadataStore
from metaxy_core.store.provenance import FEATURE_VERSION, PROVENANCE_BY_FIELD

#: where Metaxy 0.1.6 keeps its system tables, and the one that records snapshots
SYSTEM_DIR_016 = "metaxy-system"
FEATURE_VERSIONS_016 = "feature_versions"
_ALL = "__METAXY_ALL_DEP__"
_TIME_COLUMNS = ("metaxy_updated_at", "metaxy_created_at")
#: rows of a 0.1.6 feature version held in memory at once (larger versions go in hash buckets of samples)
DEFAULT_BUCKET_ROWS = 1_000_000


class Import016Error(MetaxyError):
    """The 0.1.6 store cannot be imported (the message names what and the fix)."""


@dataclass
class Import016Report:
    """What ``metaxy migrations import-016`` did."""

    source: str
    project: str
    #: 0.1.6 snapshot id -> this project's snapshot version, oldest first
    snapshots: dict[str, str]
    #: snapshots newly pushed to the store (the others were there already)
    pushed: list[str]
    ids_file: str
    #: feature -> rows carried over by this run
    rows: dict[str, int] = field(default_factory=dict)
    #: feature -> rows skipped because the sample was stored at that version already
    skipped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def import_016(
    store: DeltaMetadataStore,
    *,
    project: str,
    migrations_dir: Path,
    source: str | None = None,
    bucket_rows: int = DEFAULT_BUCKET_ROWS,
) -> Import016Report:
    """Import the Metaxy 0.1.6 store at ``source`` (default: ``store``'s root) into ``store``.

    Rows are carried over one feature version at a time, and a version of more than ``bucket_rows`` rows in
    hash buckets of samples (spilled once to local disk), so memory follows ``bucket_rows``, not the store.

    Raises:
        Import016Error: no 0.1.6 store there, no snapshot of ``project`` in it, or a spec this project
            cannot represent.
    """
    root = (source or store.root_uri).rstrip("/")
    versions = _read_delta(store, f"{root}/{SYSTEM_DIR_016}/{FEATURE_VERSIONS_016}.delta")
    if versions is None:
        raise Import016Error(
            f"no Metaxy 0.1.6 store at {root}: {SYSTEM_DIR_016}/{FEATURE_VERSIONS_016}.delta is missing; "
            "pass the root of the 0.1.6 store (its `root_path`), e.g. `metaxy migrations import-016 "
            "/path/to/store`"
        )
    graphs, order = _snapshot_graphs(versions, project, root)
    known = {s.snapshot_version for s in store.list_snapshots(project=project)}
    files = SnapshotFiles(snapshots_dir(migrations_dir))
    pushed = []
    for theirs in order:
        graph = graphs[theirs]
        if graph.snapshot_version not in known:
            store.push_snapshot(graph, project=project)
            known.add(graph.snapshot_version)
            pushed.append(graph.snapshot_version)
        files.write(graph)
    ids = {theirs: graphs[theirs].snapshot_version for theirs in order}
    ids_file = compat.write_snapshot_ids(migrations_dir, ids, source=root)
    report = Import016Report(root, project, ids, pushed, str(ids_file))
    rows = _Rows(store, root, max(1, bucket_rows))
    _import_rows(store, rows, versions.filter(pl.col("project") == project), graphs, order, report)
    return report


def _scan_delta(store: DeltaMetadataStore, uri: str) -> pl.LazyFrame | None:
    """The table at ``uri`` read with the store's options, or None when there is none."""
    if "://" not in uri and not Path(uri, "_delta_log").is_dir():
        return None
    try:
        return store.scan_external_table(uri)
    except MetaxyError:
        raise
    except Exception as exc:  # anything delta-rs raises: reported naming the table, never its credentials
        raise Import016Error(f"cannot read {uri}: {redact(str(exc), store.secrets)}") from None


def _collect(store: DeltaMetadataStore, lf: pl.LazyFrame, uri: str) -> pl.DataFrame:
    """``lf`` collected; a failed read of the store's S3 endpoint reads as the store's one-line error."""
    try:
        return lf.collect()
    except Exception as exc:
        error = store.storage_error(exc)
        if error is not None:
            raise error from None
        raise Import016Error(f"cannot read {uri}: {redact(str(exc), store.secrets)}") from None


def _read_delta(store: DeltaMetadataStore, uri: str) -> pl.DataFrame | None:
    """The (small) table at ``uri``, collected, or None when there is none."""
    lf = _scan_delta(store, uri)
    return None if lf is None else _collect(store, lf, uri)


# ----------------------------------------------------------------------------------------- snapshots
def _snapshot_graphs(
    versions: pl.DataFrame, project: str, root: str
) -> tuple[dict[str, FeatureGraph], list[str]]:
    """Every 0.1.6 snapshot of ``project`` as this project's graph, and their ids oldest first."""
    rows = versions.filter(pl.col("project") == project)
    if "deleted_at" in rows.columns:
        rows = rows.filter(pl.col("deleted_at").is_null())
    if rows.height == 0:
        found = sorted(versions["project"].unique().to_list()) if versions.height else []
        raise Import016Error(
            f"the 0.1.6 store at {root} has no snapshot of project {project!r} (it has: "
            f"{', '.join(found) or 'none'}); set `project` in metaxy.toml to the 0.1.6 project's name"
        )
    order = (
        rows.group_by("metaxy_project_version")
        .agg(pl.col("recorded_at").min())
        .sort(["recorded_at", "metaxy_project_version"])["metaxy_project_version"]
        .to_list()
    )
    graphs = {}
    for theirs in order:
        specs = [
            json.loads(s) for s in rows.filter(pl.col("metaxy_project_version") == theirs)["feature_spec"]
        ]
        graphs[theirs] = _graph(specs, theirs)
    return graphs, order


def _graph(specs: list[dict[str, Any]], snapshot: str) -> FeatureGraph:
    """The 0.1.6 specs of one snapshot as this project's graph (features added upstream first)."""
    by_key = {str(FeatureKey(s["key"])): s for s in specs}
    graph, pending = FeatureGraph(), dict(by_key)
    while pending:
        ready = [
            k for k, s in pending.items() if all(_dep_key(d) not in pending for d in s.get("deps") or [])
        ]
        if not ready:
            raise Import016Error(
                f"0.1.6 snapshot {snapshot}: features {', '.join(sorted(pending))} depend on features the "
                "snapshot does not record"
            )
        for key in sorted(ready):
            graph.add(_spec(pending.pop(key), by_key, snapshot))
    return graph


def _dep_key(dep: dict[str, Any] | str) -> str:
    return str(FeatureKey(dep["feature"] if isinstance(dep, dict) else dep))


def _spec(data: dict[str, Any], by_key: dict[str, dict[str, Any]], snapshot: str) -> FeatureSpec:
    key = str(FeatureKey(data["key"]))
    deps = [d if isinstance(d, dict) else {"feature": d} for d in data.get("deps") or []]
    for dep in deps:
        lineage = ((dep.get("lineage") or {}).get("relationship") or {}).get("type", "1:1")
        if lineage != "1:1":
            raise Import016Error(
                f"0.1.6 snapshot {snapshot}, feature {key}: its dependency on {_dep_key(dep)} has lineage "
                f"{lineage!r}; this project joins features one-to-one on their id columns, so the feature "
                "cannot be imported (recompute it instead)"
            )
    fields = []
    for fdata in data.get("fields") or []:
        fkey = "/".join(fdata["key"]) if isinstance(fdata["key"], list) else str(fdata["key"])
        fields.append(
            FieldSpec(
                key=fkey,
                code_version=str(fdata.get("code_version", "1")),
                deps=_field_deps(fkey, fdata.get("deps"), deps, by_key),
            )
        )
    return FeatureSpec(
        key=key,
        id_columns=tuple(data.get("id_columns") or ("sample_uid",)),
        fields=tuple(fields),
        deps=tuple(FeatureDep(feature=_dep_key(d)) for d in deps),
    )


def _field_deps(
    fkey: str, declared: Any, deps: list[dict[str, Any]], by_key: dict[str, dict[str, Any]]
) -> tuple[FieldDep, ...] | None:
    """A 0.1.6 field's dependencies as explicit ones (None: every field of every upstream feature)."""
    if not deps or declared == _ALL:
        return None
    if declared:  # explicit FieldDeps
        return tuple(
            FieldDep(
                feature=_dep_key(d),
                fields=None
                if d.get("fields") in (None, _ALL)
                else tuple(_field_name(f) for f in d["fields"]),
            )
            for d in declared
        )
    resolved = []  # no explicit deps: 0.1.6 maps them through each dependency's fields_mapping
    for dep in deps:
        upstream = [_field_name(f["key"]) for f in by_key[_dep_key(dep)].get("fields") or []]
        chosen = _mapped(fkey, upstream, ((dep.get("fields_mapping") or {}).get("mapping")) or {})
        if chosen:
            resolved.append(FieldDep(feature=_dep_key(dep), fields=tuple(chosen)))
    return tuple(resolved)


def _mapped(fkey: str, upstream: list[str], mapping: dict[str, Any]) -> list[str]:
    """0.1.6's ``FieldsMapping`` resolution: which upstream fields a field without explicit deps uses."""
    kind = mapping.get("type", "default")
    if kind == "all":
        return upstream
    if kind == "none":
        return []
    if kind == "specific":
        wanted = {_field_name(f) for f in (mapping.get("mapping") or {}).get(fkey, [])}
        return [f for f in upstream if f in wanted]
    excluded = {_field_name(f) for f in mapping.get("exclude_fields") or []}
    candidates = [f for f in upstream if f not in excluded]
    parts = fkey.split("/")
    same = [
        f
        for f in candidates
        if f == fkey or (mapping.get("match_suffix") and f.split("/")[-len(parts) :] == parts)
    ]
    return same or candidates  # 0.1.6: no match means every (non-excluded) upstream field


def _field_name(value: Any) -> str:
    return "/".join(value) if isinstance(value, list) else str(value)


# ---------------------------------------------------------------------------------------------- rows
def _import_rows(
    store: DeltaMetadataStore,
    source: _Rows,
    versions: pl.DataFrame,
    graphs: dict[str, FeatureGraph],
    order: list[str],
    report: Import016Report,
) -> None:
    """Carry every feature's rows over, upstream first, each 0.1.6 feature version oldest first."""
    latest = graphs[order[-1]]
    keys = list(latest.topological_order())
    keys += [k for g in graphs.values() for k in g.topological_order() if k not in keys]
    for key in keys:
        table = source.table(key)
        if table is None:
            continue
        for theirs_version, count in source.versions(table):
            graph = _graph_of(key, theirs_version, versions, graphs, order)
            for rows, present in source.buckets(table, graph.spec(key), theirs_version, count, graph):
                written, skipped = _write(store, key, rows, present, graph, theirs_version)
                report.rows[str(key)] = report.rows.get(str(key), 0) + written
                report.skipped[str(key)] = report.skipped.get(str(key), 0) + skipped


@dataclass
class _Table:
    """A 0.1.6 feature table: where it is, its rows (lazily) and the columns that order them in time."""

    uri: str
    rows: pl.LazyFrame
    order_by: list[str]


@dataclass
class _Rows:
    """Reads the 0.1.6 store's feature tables, one feature version, and one bucket of samples, at a time."""

    store: DeltaMetadataStore
    root: str
    bucket_rows: int

    def table(self, key: FeatureKey) -> _Table | None:
        """The 0.1.6 table of ``key`` (nested layout ``video/raw.delta``, or flat ``video__raw.delta``)."""
        for path in ("/".join(key.parts), key.to_table_name()):
            uri = f"{self.root}/{path}.delta"
            rows = _scan_delta(self.store, uri)
            if rows is not None:
                schema = rows.collect_schema()
                return _Table(uri, rows, [c for c in _TIME_COLUMNS if c in schema])  # 0.1.6 orders by time
        return None

    def versions(self, table: _Table) -> list[tuple[str, int]]:
        """The table's 0.1.6 feature versions, oldest first (by their oldest row), with their row counts."""
        first = [pl.col(c).min().alias(c) for c in table.order_by]
        counts = table.rows.group_by(FEATURE_VERSION).agg(pl.len().alias("__n"), *first)
        ordered = _collect(self.store, counts, table.uri).sort([*table.order_by, FEATURE_VERSION])
        return list(zip(ordered[FEATURE_VERSION].to_list(), ordered["__n"].to_list(), strict=True))

    def buckets(
        self, table: _Table, spec: FeatureSpec, theirs_version: str, count: int, graph: FeatureGraph
    ) -> Iterator[tuple[pl.DataFrame, pl.LazyFrame | None]]:
        """The rows of one 0.1.6 feature version, oldest first, with the ids of the samples this project
        already stores at ``graph``'s version (None: none), one hash bucket of samples at a time."""
        ids = list(spec.id_columns)
        rows = table.rows.filter(pl.col(FEATURE_VERSION) == theirs_version)
        stored = self.store.scan_feature(spec.key)
        present = (
            None
            if stored is None
            else stored.filter(pl.col(FEATURE_VERSION) == graph.feature_version(spec.key)).select(ids)
        )
        with Buckets(Partitioning(buckets_for(count, self.bucket_rows), tuple(ids))) as buckets:
            buckets.add("rows", rows, None)
            if present is not None:
                buckets.add("present", present, None)
            for b in range(buckets.k):
                frame = _collect(self.store, buckets.get("rows", b), table.uri)
                if table.order_by:
                    frame = frame.sort(table.order_by, nulls_last=False, maintain_order=True)
                yield frame, None if present is None else buckets.get("present", b)


def _graph_of(
    key: FeatureKey,
    theirs_version: str,
    versions: pl.DataFrame,
    graphs: dict[str, FeatureGraph],
    order: list[str],
) -> FeatureGraph:
    """The (oldest) rebuilt graph of a 0.1.6 snapshot recording ``key`` at 0.1.6 feature version
    ``theirs_version``."""
    recorded = set(
        versions.filter(
            (pl.col("feature_key") == str(key)) & (pl.col("metaxy_feature_version") == theirs_version)
        )["metaxy_project_version"].to_list()
    )
    for theirs in order:
        if theirs in recorded:
            return graphs[theirs]
    raise Import016Error(
        f"rows of feature {key} at 0.1.6 feature version {theirs_version} belong to no recorded 0.1.6 "
        "snapshot; run `metaxy push` with Metaxy 0.1.6 on the code that wrote them, then import again"
    )


def _write(
    store: DeltaMetadataStore,
    key: FeatureKey,
    rows: pl.DataFrame,
    present: pl.LazyFrame | None,
    graph: FeatureGraph,
    theirs_version: str,
) -> tuple[int, int]:
    """Append rows of one 0.1.6 feature version at ``graph``'s version, but for the samples ``present``
    names (stored there already: a re-run); (written, skipped)."""
    spec = graph.spec(key)
    ids = list(spec.id_columns)
    rows = rows.unique(subset=ids, keep="last", maintain_order=True)  # newest row per sample (sorted by time)
    if "metaxy_deleted_at" in rows.columns:
        rows = rows.filter(pl.col("metaxy_deleted_at").is_null())
    keep = [c for c in rows.columns if not c.startswith("metaxy_")]
    if not spec.deps:  # a root feature's provenance is its data's: keep it
        keep.append(PROVENANCE_BY_FIELD)
    rows = rows.select(keep)
    skipped = 0
    if present is not None:
        before = rows.height
        rows = rows.lazy().join(present.unique(), on=ids, how="anti").collect()
        skipped = before - rows.height
    if rows.height == 0:
        return 0, skipped
    written = store.write_metadata(
        key,
        rows,
        graph=graph,
        write_id=f"metaxy016/{key.to_table_name()}/{theirs_version}",
        snapshot_version=graph.snapshot_version,
    )
    return written, skipped
