"""Fixture projects for the metaxy_dagster tests: a real Delta store, real migration files, real features.

Importable by name (``tests/dagster`` is on ``sys.path`` under pytest, and spawned Dagster step processes get
it through ``reconstructor_working_directory``), so it also hosts the custom operation classes migration files
refer to and the reconstructable job factories of the multiprocess tests.
"""

from __future__ import annotations

import contextlib
import importlib
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import polars as pl

from metaxy_core import FeatureGraph, MetaxyConfig
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import BaseOperation, OperationContext, StepOutcome
from metaxy_core.store.delta import SYSTEM_DIR, DeltaMetadataStore
from metaxy_core.testing import seed_video_store, video_features, video_graph, write_migration

RAW, EMB, CLIP = "video/raw", "video/embeddings", "video/clip_scores"
RECONCILE = {"type": "metaxy_core.migrations.ops.DataVersionReconciliation"}
SAMPLES = ["s1", "s2", "s3", "s4", "s5"]


def build_graph(version: int) -> FeatureGraph:
    """raw -> embeddings -> clip scores (the video graph of metaxy_core.testing).

    ``version`` is the embeddings' code version.
    """
    return video_graph(embedding=str(version), downstream=CLIP)


# --------------------------------------------------------------------------- custom operations
class FlakyOperation(BaseOperation):
    """Fails once: the first real run creates ``marker`` and raises; later runs succeed."""

    default_id: ClassVar[str | None] = "flaky"
    marker: str

    def features_for(self, ctx: OperationContext) -> list[FeatureKey]:
        return list(ctx.affected[:1])

    def run(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome:
        marker = Path(self.marker)
        if not ctx.dry_run and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError(f"flaky operation failing once (marker {marker.name} created)")
        return StepOutcome(0, note="flaky operation passed")


class LeakyOperation(BaseOperation):
    """Raises an error that quotes the store's storage options (their secrets must be redacted)."""

    default_id: ClassVar[str | None] = "leaky"

    def features_for(self, ctx: OperationContext) -> list[FeatureKey]:
        return list(ctx.affected[:1])

    def run(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome:
        if ctx.dry_run:
            return StepOutcome(0)
        raise RuntimeError(f"cannot reach the bucket with options {ctx.store.storage_options}")


# --------------------------------------------------------------------------- projects
@dataclass
class Project:
    """A metaxy project on disk: ``metaxy.toml``, an entrypoint module, migration files and a Delta store."""

    root: Path
    module: str
    code_version: int
    graphs: dict[int, FeatureGraph] = field(default_factory=dict)
    _code_graph: FeatureGraph | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "metaxy.toml"

    @property
    def migrations_dir(self) -> Path:
        return self.root / "migrations"

    @property
    def store_root(self) -> Path:
        return self.root / "store"

    def config(self) -> MetaxyConfig:
        return MetaxyConfig.load(self.config_path)

    def store(self) -> DeltaMetadataStore:
        return self.config().get_store()

    def graph(self, version: int) -> FeatureGraph:
        if version not in self.graphs:
            self.graphs[version] = build_graph(version)
        return self.graphs[version]

    @property
    def code_graph(self) -> FeatureGraph:
        """The graph the entrypoint module declares, imported once into its own graph."""
        if self._code_graph is None:
            graph = FeatureGraph()
            with graph.use():
                self.config().load_features()
            self._code_graph = graph
        return self._code_graph

    @contextlib.contextmanager
    def active(self) -> Iterator[FeatureGraph]:
        """Make the project's code graph the active one (what ``load_features`` returns in this process)."""
        with self.code_graph.use() as graph:
            yield graph

    # ------------------------------------------------------------------ data
    def push(self, version: int) -> str:
        return self.store().push_snapshot(self.graph(version)).snapshot_version

    def write_data(self, version: int, samples: list[str] = SAMPLES) -> None:
        features = video_features(embedding=str(version), downstream=CLIP)
        seed_video_store(self.store(), features, samples, frames="f-", audio="a-")

    def write_migration(
        self,
        migration_id: str,
        *,
        parent: str,
        from_version: int,
        to_version: int,
        ops: list[dict] | None = None,
        description: str | None = None,
    ) -> Path:
        return write_migration(
            self.migrations_dir,
            migration_id,
            parent=parent,
            from_snapshot=self.graph(from_version),
            to_snapshot=self.graph(to_version),
            ops=ops if ops is not None else [RECONCILE],
            created_at=f"{migration_id[:4]}-{migration_id[4:6]}-{migration_id[6:8]}T00:00:00+00:00",
            description=description or f"Carry embeddings from code version {from_version} to {to_version}",
        )

    def rows_at(self, feature: str, version: int) -> int:
        graph = self.graph(version)
        return (
            self.store()
            .read_metadata(feature, graph=graph, allow_missing=True)
            .select(pl.len())
            .collect()
            .item()
        )

    def table_versions(self) -> dict[str, int | None]:
        """Delta version of every table under the store root, system tables included."""
        store = self.store()
        out: dict[str, int | None] = {}
        for log in sorted(self.store_root.rglob("_delta_log")):
            table = log.parent
            rel = table.relative_to(self.store_root).as_posix()
            if rel.startswith(SYSTEM_DIR + "/"):
                out[rel] = store.table_version(system=rel.split("/", 1)[1])
            else:
                out[rel] = store.table_version(FeatureKey(rel.split("__")))
        return out


def make_project(
    tmp_path: Path,
    *,
    code_version: int = 3,
    pushed: tuple[int, ...] = (1, 2, 3),
    data_version: int | None = 1,
    migrations: tuple[tuple[int, int], ...] = ((1, 2), (2, 3)),
    store_root: str = "store",
    storage_options: dict[str, str] | None = None,
) -> Project:
    """A project whose code declares ``code_version``, with snapshots ``pushed`` and a chain of
    ``migrations``."""
    root = tmp_path / "project"
    root.mkdir(parents=True)
    module = f"mxdg_features_{uuid.uuid4().hex[:10]}"
    (root / f"{module}.py").write_text(
        "from metaxy_core.testing import declare_video_features\n\n"
        f"declare_video_features(embedding='{code_version}', downstream='{CLIP}')\n"
    )
    (root / "metaxy.toml").write_text(
        textwrap.dedent(
            f"""\
            project = "demo"
            entrypoints = ["{module}"]
            migrations_dir = "migrations"
            [store]
            root = "{store_root}"
            """
        )
        + (
            "[store.storage_options]\n" + "".join(f'{k} = "{v}"\n' for k, v in storage_options.items())
            if storage_options
            else ""
        )
    )
    project = Project(root=root, module=module, code_version=code_version)
    project.migrations_dir.mkdir()
    for version in pushed:
        project.push(version)
        if data_version == version:
            project.write_data(version)
    parent = "initial"
    for i, (a, b) in enumerate(migrations):
        mid = f"2025010{i + 1}_000000_emb_v{a}_to_v{b}"
        project.write_migration(mid, parent=parent, from_version=a, to_version=b)
        parent = mid
    return project


def migration_ids(project: Project) -> list[str]:
    return sorted(p.stem for p in project.migrations_dir.glob("*.yaml"))


# --------------------------------------------------------------------------- reconstructable jobs
def apply_job(config_path: str):
    """Module-level factory for ``build_reconstructable_job`` (spawned processes call it again)."""
    from metaxy_dagster import APPLY_JOB_NAME, build_migration_definitions

    return build_migration_definitions(config_path=config_path).resolve_job_def(APPLY_JOB_NAME)


def importlib_reload(module: str) -> None:
    importlib.invalidate_caches()
    importlib.import_module(module)
