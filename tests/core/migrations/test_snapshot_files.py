"""Snapshot files beside the migrations: an applied migration stays loadable however the code moves on.

Each step below runs the way a new process would (a fresh feature graph, the entrypoint imported again), with
the code at the version the step names, against a real Delta store.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from metaxy_core import FeatureGraph
from metaxy_core.commands import migrations_generate, open_project, push
from metaxy_core.commands.project import Project
from metaxy_core.migrations import load_chain
from metaxy_core.migrations.snapshot_files import SnapshotFileError, SnapshotFiles, snapshots_dir

FEATURES = """
import os

from metaxy_core.testing import declare_video_features

declare_video_features(embedding=os.environ["EMB_VERSION"], downstream="video/scores")
"""

# build_operations reads the active graph: it must be the migration's target, whatever the code is now
PYTHON_MIGRATION = """
from datetime import datetime, timezone

from metaxy_core import FeatureGraph
from metaxy_core.migrations import DataVersionReconciliation, PythonMigration

SEEN = []


class EmbeddingsV2(PythonMigration):
    migration_id: str = "{mid}"
    created_at: datetime = datetime(2025, 1, 1, tzinfo=timezone.utc)
    parent: str = "initial"
    from_snapshot_version: str = "{v1}"
    to_snapshot_version: str = "{v2}"

    def build_operations(self):
        graph = FeatureGraph.get_active()
        SEEN.append(graph.snapshot_version)
        changed = [k for k in graph.keys if str(k) == "video/embeddings"]
        return [DataVersionReconciliation(id=f"reconcile_{{k.to_table_name()}}", features=[k])
                for k in [*changed, *graph.downstream(changed)]]
"""
MID = "20250101_000000_embeddings_v2"


class Code:
    """The project at one code version (``EMB_VERSION``), loaded afresh as a new process would."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch

    def at(self, version: int, action: Callable[[Project], Any]) -> Any:
        self.monkeypatch.setenv("EMB_VERSION", str(version))
        sys.modules.pop("snapfile_features", None)
        for name in [n for n in sys.modules if n.startswith("_metaxy_migrations.")]:
            sys.modules.pop(name)
        with FeatureGraph().use():
            project = open_project(self.root / "metaxy.toml")
            assert len(project.graph)  # the entrypoint imported into this fresh graph
            return action(project)

    def graph(self, version: int) -> FeatureGraph:
        return self.at(version, lambda p: p.graph)

    @property
    def files(self) -> SnapshotFiles:
        return SnapshotFiles(snapshots_dir(self.root / ".metaxy" / "migrations"))


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Code]:
    (tmp_path / "metaxy.toml").write_text('project = "snap"\nentrypoints = ["snapfile_features"]\n')
    (tmp_path / "snapfile_features.py").write_text(FEATURES)
    yield Code(tmp_path, monkeypatch)
    sys.modules.pop("snapfile_features", None)


def seed(project: Project) -> None:
    raw = pl.DataFrame({"sample_uid": [f"s{i}" for i in range(20)]}).with_columns(
        metaxy_provenance_by_field=pl.struct(frames=pl.col("sample_uid") + "f", audio=pl.col("sample_uid"))
    )
    store = project.store
    store.write_metadata("video/raw", raw)
    for key in ("video/embeddings", "video/scores"):
        store.write_metadata(key, store.resolve_update(key).added)


def write_python_migration(code: Code) -> Path:
    v1, v2 = code.graph(1).snapshot_version, code.graph(2).snapshot_version
    folder = code.root / ".metaxy" / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{MID}.py"
    path.write_text(textwrap.dedent(PYTHON_MIGRATION.format(mid=MID, v1=v1, v2=v2)))
    return path


def test_push_writes_the_code_snapshot_file_and_generate_writes_both_of_its_snapshots(code: Code) -> None:
    report = code.at(1, push)
    v1 = code.graph(1).snapshot_version
    assert report.snapshot_files == (str(code.files.path(v1)),)
    assert code.at(1, push).snapshot_files == ()  # intact file: kept as is (no diff in version control)
    code.at(2, push)
    generated = code.at(2, lambda p: migrations_generate(p, "emb v2"))
    assert code.files.has(generated.from_snapshot_version) and code.files.has(generated.to_snapshot_version)
    data = json.loads(code.files.path(generated.to_snapshot_version).read_text())
    assert data["snapshot_version"] == generated.to_snapshot_version
    assert [f["key"] for f in data["features"]] == ["video/raw", "video/embeddings", "video/scores"]


def test_an_applied_python_migration_builds_its_operations_from_its_target_snapshot_after_the_code_moved(
    code: Code,
) -> None:
    code.at(1, seed)
    code.at(1, push)
    code.at(2, push)
    write_python_migration(code)
    results = code.at(2, lambda p: p.executor().apply(p.chain))
    assert results[0].rows_by_feature() == {"video/embeddings": 20, "video/scores": 20}
    v2 = code.graph(2).snapshot_version
    # The code moves on to v3 (pushed): loading the chain and building the operations still sees v2.
    code.at(3, push)

    def operations(project: Project) -> tuple[list[str], str]:
        migration = project.chain.get(MID)
        module = sys.modules[f"_metaxy_migrations.{MID}"]
        ids = [op.op_id for op in migration.operations()]
        return ids, module.SEEN[-1]

    ids, seen = code.at(3, operations)
    assert ids == ["reconcile_video__embeddings", "reconcile_video__scores"] and seen == v2

    # Rolled back and applied again from the v3 code: rows land at the v2 versions the migration targets.
    def reapply(project: Project) -> dict[str, int]:
        executor = project.executor()
        from metaxy_core.migrations.rollback import rollback

        rollback(executor, project.chain, MID)
        return executor.apply(project.chain)[0].rows_by_feature()

    assert code.at(3, reapply) == {"video/embeddings": 20, "video/scores": 20}
    v2_graph = code.files.load(v2)
    store = code.at(3, lambda p: p.store)
    rows = store.read_metadata("video/embeddings", graph=v2_graph).select(pl.len()).collect().item()
    assert rows == 20


def test_a_missing_snapshot_file_names_the_file_and_metaxy_push_and_push_restores_it(code: Code) -> None:
    code.at(1, push)
    code.at(2, push)
    write_python_migration(code)
    v2 = code.graph(2).snapshot_version
    for path in code.files.directory.glob("*.json"):
        path.unlink()
    code.files.write(code.graph(3))  # only the (moved-on) code's own snapshot is there

    def files_only(project: Project) -> None:
        chain = load_chain(project.config.migrations_path)  # what Dagster does: files, never the store
        chain.get(MID).operations()

    with FeatureGraph().use():
        code.monkeypatch.setenv("EMB_VERSION", "3")
        sys.modules.pop("snapfile_features", None)
        with pytest.raises(SnapshotFileError) as caught:
            files_only(open_project(code.root / "metaxy.toml"))
    message = str(caught.value)
    assert message.startswith(str(code.files.path(v2))) and "run `metaxy push`" in message
    # The CLI has the store: it stands in for the missing file.
    ids = code.at(3, lambda p: [op.op_id for op in p.executor()._operations(p.chain.get(MID))])
    assert ids == ["reconcile_video__embeddings", "reconcile_video__scores"]
    # `metaxy push` (any code version) exports every snapshot the migrations name from the store.
    written = code.at(3, push).snapshot_files
    assert str(code.files.path(v2)) in written
    code.at(3, files_only)


def test_an_edited_snapshot_file_fails_loudly_naming_it(code: Code) -> None:
    code.at(1, push)
    code.at(2, push)
    write_python_migration(code)
    v2 = code.graph(2).snapshot_version
    path = code.files.path(v2)
    data = json.loads(path.read_text())
    data["features"][1]["fields"][0]["code_version"] = "9"  # a hand edit: the graph no longer hashes to v2
    path.write_text(json.dumps(data))
    with pytest.raises(SnapshotFileError) as caught:
        code.files.load(v2)
    assert str(caught.value).startswith(f"{path}: snapshot {v2} rebuilt to version")
    assert "restore it from version control" in str(caught.value)
    path.write_text("{ not json")
    with pytest.raises(SnapshotFileError, match="is not a readable snapshot"):
        code.files.load(v2)
    code.at(2, push)  # push repairs a damaged file of the code's snapshot
    assert code.files.load(v2).snapshot_version == v2


def test_build_operations_that_never_read_the_graph_need_no_snapshot_file(code: Code) -> None:
    path = write_python_migration(code)
    path.write_text(
        path.read_text().replace(
            "        graph = FeatureGraph.get_active()\n        SEEN.append(graph.snapshot_version)\n"
            '        changed = [k for k in graph.keys if str(k) == "video/embeddings"]\n',
            "        return [DataVersionReconciliation(id='fixed')]\n",
        )
    )
    ids = code.at(
        3, lambda p: [op.op_id for op in load_chain(p.config.migrations_path).get(MID).operations()]
    )
    assert ids == ["fixed"]


def test_a_snapshot_version_cannot_point_outside_the_snapshots_folder(code: Code) -> None:
    with pytest.raises(Exception, match="is not a snapshot version"):
        code.files.path("../../etc/passwd")
