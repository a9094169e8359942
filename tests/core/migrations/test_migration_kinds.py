"""Each migration kind applied end to end on a real Delta store."""

from __future__ import annotations

import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import mxtest_support as s
import polars as pl
import pytest

from metaxy_core.migrations import (
    CustomMigration,
    DiffMigration,
    FullGraphMigration,
    MigrationExecutor,
    PythonMigration,
    load_chain,
    load_migration_file,
)
from metaxy_core.migrations.executor import CUSTOM_FEATURE
from metaxy_core.migrations.loader import MigrationLoadError
from metaxy_core.store.provenance import FEATURE_VERSION, SNAPSHOT_VERSION, WRITE_ID

MID = "20250301_120000_change"


@pytest.fixture
def graphs(store):
    """v1 stored (40 raw, 30 emb, 20 caption) and pushed; v2 bumps emb and caption and is pushed."""
    g1, g2 = s.make_graph(emb="1", caption="1"), s.make_graph(emb="2", caption="2")
    s.seed(store, g1, n_raw=40, n_emb=30, n_caption=20)
    store.push_snapshot(g2, project=s.PROJECT)
    return g1, g2


def write_py(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


# ------------------------------------------------------------------------------------------ diff
def test_diff_migration_from_yaml_reconciles_every_affected_feature(store, mig_dir, graphs):
    g1, g2 = graphs
    s.write_migration(mig_dir, MID, from_=g1.snapshot_version, to=g2.snapshot_version)
    chain = load_chain(mig_dir)
    m = chain.get(MID)
    assert isinstance(m, DiffMigration) and m.kind == "diff"
    assert [str(k) for k in m.get_affected_features(store, s.PROJECT, g2)] == [s.CAPTION, s.EMB]

    [result] = MigrationExecutor(store, graph=g2).apply(chain)
    assert result.status == "completed" and not result.dry_run
    assert [(st.op_id, st.feature_key, st.status, st.rows) for st in result.steps] == [
        ("reconcile", s.CAPTION, "completed", 20),
        ("reconcile", s.EMB, "completed", 30),
    ]
    for feature, n in ((s.EMB, 30), (s.CAPTION, 20)):
        rows = s.latest(store, g2, feature)
        assert rows.height == n
        assert rows[FEATURE_VERSION].unique().to_list() == [g2.feature_version(feature)]
        assert rows[SNAPSHOT_VERSION].unique().to_list() == [g2.snapshot_version]
        assert rows[WRITE_ID].unique().to_list() == [f"{MID}/0/{feature.replace('/', '__')}"]
    assert MigrationExecutor(store, graph=g2).apply(chain) == []  # completed: nothing pending


# ---------------------------------------------------------------------------------------- python
PYTHON_MIGRATION = """\
from datetime import datetime, timezone

from metaxy_core import FeatureGraph
from metaxy_core.migrations import PythonMigration

CALLS = []


class OnlyEmbeddings(PythonMigration):
    \"\"\"Reconcile the features whose key ends with the suffix read from the environment at run time.\"\"\"

    migration_id: str = "{mid}"
    created_at: datetime = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)
    from_snapshot_version: str = "{from_}"
    to_snapshot_version: str = "{to}"

    def build_operations(self):
        import os

        graph = FeatureGraph.get_active()
        suffix = os.environ["MXTEST_SUFFIX"]
        wanted = [str(k) for k in graph.keys if str(k).endswith(suffix)]
        CALLS.append(wanted)
        return [{{"type": "metaxy_core.migrations.DataVersionReconciliation", "id": "reconcile_some",
                  "features": wanted}}]
"""


def test_python_migration_builds_its_operations_at_run_time(store, mig_dir, graphs, monkeypatch):
    g1, g2 = graphs
    monkeypatch.delenv("MXTEST_SUFFIX", raising=False)
    write_py(
        mig_dir, MID, PYTHON_MIGRATION.format(mid=MID, from_=g1.snapshot_version, to=g2.snapshot_version)
    )
    chain = load_chain(mig_dir)  # build_operations is not called while loading (the variable is unset)
    m = chain.get(MID)
    module = sys.modules[type(m).__module__]
    assert isinstance(m, PythonMigration) and m.kind == "python" and module.CALLS == []

    monkeypatch.setenv("MXTEST_SUFFIX", "/emb")
    [result] = MigrationExecutor(store, graph=g2).apply(chain)
    assert module.CALLS and module.CALLS[-1] == [s.EMB]  # saw the executor's graph and the environment
    assert [(st.op_id, st.feature_key, st.rows) for st in result.steps] == [("reconcile_some", s.EMB, 30)]
    assert s.latest(store, g2, s.EMB).height == 30
    assert store.read_metadata(s.CAPTION, graph=g2).collect().height == 0  # not selected: left alone


def test_python_migration_can_filter_affected_features(store, graphs):
    g1, g2 = graphs

    class OnlyCaption(PythonMigration):
        migration_id: str = MID
        created_at: datetime = datetime(2025, 3, 1, tzinfo=UTC)
        from_snapshot_version: str = g1.snapshot_version
        to_snapshot_version: str = g2.snapshot_version

        def build_operations(self):
            return [{"type": s.RECONCILE}]

        def get_affected_features(self, store, project):
            return [k for k in super().get_affected_features(store, project, g2) if str(k) == s.CAPTION]

    result = MigrationExecutor(store, graph=g2).apply_migration(OnlyCaption())
    assert [(st.feature_key, st.rows) for st in result.steps] == [(s.CAPTION, 20)]


# ---------------------------------------------------------------------------------------- custom
CUSTOM_MIGRATION = """\
from datetime import datetime, timezone

import polars as pl
from pydantic import field_validator, model_validator

from metaxy_core.migrations import CustomMigration


class Relabel(CustomMigration):
    migration_id: str = "{mid}"
    created_at: datetime = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)
    feature: str = "video/emb"
    new_label: str = "{label}"
    limit: int = {limit}

    @field_validator("new_label")
    @classmethod
    def _label(cls, value):
        if not value.startswith("label-"):
            raise ValueError("new_label must start with 'label-'")
        return value

    @model_validator(mode="after")
    def _limit(self):
        if self.limit <= 0:
            raise ValueError("limit must be positive")
        return self

    def execute(self, store, project, *, dry_run=False):
        rows = store.read_metadata(self.feature).collect().sort("video_id", "frame_idx").head(self.limit)
        if dry_run:
            return {{self.feature: rows.height}}
        store.write_metadata(self.feature, rows.with_columns(pl.lit(self.new_label).alias("label")))
        return {{self.feature: rows.height}}
"""


def test_custom_migration_runs_its_execute_with_dry_run_respected(store, mig_dir, graphs):
    _, g2 = graphs
    g1 = s.make_graph(emb="1", caption="1")
    write_py(mig_dir, MID, CUSTOM_MIGRATION.format(mid=MID, label="label-new", limit=5))
    chain = load_chain(mig_dir)
    m = chain.get(MID)
    assert isinstance(m, CustomMigration) and m.kind == "custom"
    assert m.operation_labels() == [("execute", f"{type(m).__module__}.Relabel")]
    executor = MigrationExecutor(store, graph=g1)
    before = s.delta_versions(store.root_uri)

    [plan] = executor.apply(chain, dry_run=True)
    assert plan.status == "planned" and plan.rows_total == 5
    assert [(st.feature_key, st.status) for st in plan.steps] == [(CUSTOM_FEATURE, "planned")]
    assert s.delta_versions(store.root_uri) == before

    [result] = executor.apply(chain)
    assert result.status == "completed" and result.rows_total == 5
    labels = s.latest(store, g1, s.EMB)["label"].to_list()
    assert labels[:5] == ["label-new"] * 5 and labels[5] == "label-5"
    written = s.stored_rows(store, g1, s.EMB).filter(pl.col(WRITE_ID) == f"{MID}/0/*")
    assert written.height == 5  # attributed to the migration's step (for progress and rollback)
    assert executor.state(MID).steps[(0, CUSTOM_FEATURE)].writes == {s.EMB: 5}


@pytest.mark.parametrize(
    ("label", "limit", "problem"),
    [
        ("wrong", 5, "new_label: new_label must start with 'label-'"),
        ("label-ok", 0, "limit must be positive"),
    ],
)
def test_custom_migration_validators_fail_at_load_naming_the_file_and_nothing_is_written(
    store, mig_dir, graphs, label, limit, problem
):
    path = write_py(mig_dir, MID, CUSTOM_MIGRATION.format(mid=MID, label=label, limit=limit))
    before = s.delta_versions(store.root_uri)
    with pytest.raises(MigrationLoadError) as info:
        load_chain(mig_dir)
    assert str(info.value).startswith(f"{path}: invalid Relabel: ")
    assert problem in str(info.value)
    assert s.delta_versions(store.root_uri) == before


def test_custom_migration_that_writes_during_a_dry_run_is_stopped(store, graphs):
    g1, _ = graphs

    class Careless(CustomMigration):
        migration_id: str = MID
        created_at: datetime = datetime(2025, 3, 1, tzinfo=UTC)

        def execute(self, store, project, *, dry_run=False):
            return store.write_metadata(s.RAW, s.raw_rows(2, 5000))

    before = s.delta_versions(store.root_uri)
    with pytest.raises(Exception, match="attempted during a dry run"):
        MigrationExecutor(store, graph=g1).apply_migration(Careless(), dry_run=True)
    assert s.delta_versions(store.root_uri) == before


# ------------------------------------------------------------------------------------ full graph
def test_full_graph_migration_runs_a_backfill_naming_its_feature(store, mig_dir):
    g = s.make_graph()
    s.seed(store, g, n_raw=10, n_emb=10)
    path = mig_dir / f"{MID}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        migration_id: {MID}
        created_at: 2025-03-01T12:00:00+00:00
        parent: initial
        kind: full_graph
        ops:
          - type: mxtest_ops.BackfillRaw
            id: backfill_raw
            feature_key: [video, raw]
            start: 100
            count: 7
            source: s3://prod-videos
            reason: Initial backfill
    """)
    )
    m = load_migration_file(path)
    assert isinstance(m, FullGraphMigration) and m.kind == "full_graph"
    assert [str(k) for k in m.get_affected_features(store, s.PROJECT, g)] == [s.RAW]
    executor = MigrationExecutor(store, graph=g)

    [plan] = executor.apply(load_chain(mig_dir), dry_run=True)
    assert [(st.op_id, st.feature_key, st.status, st.rows) for st in plan.steps] == [
        ("backfill_raw", s.RAW, "planned", 7)
    ]
    assert s.latest(store, g, s.RAW).height == 10

    [result] = executor.apply(load_chain(mig_dir))
    assert [(st.op_id, st.feature_key, st.status, st.rows) for st in result.steps] == [
        ("backfill_raw", s.RAW, "completed", 7)
    ]
    raw = s.latest(store, g, s.RAW)
    assert raw.height == 17
    new = raw.filter(pl.col("path") == "s3://prod-videos")
    assert new.height == 7 and new[SNAPSHOT_VERSION].unique().to_list() == [g.snapshot_version]
    assert new[WRITE_ID].unique().to_list() == [f"{MID}/0/video__raw"]
    # the backfilled samples are now visible to downstream computation
    assert store.resolve_update(s.EMB, graph=g).counts() == {"added": 7, "changed": 0, "removed": 0}
