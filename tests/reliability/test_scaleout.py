"""Scale-out: units of work on several processes give the sequential result, under one lease.

The scale-out project (:mod:`metaxy_core.testing.scaleout`): ``wide/left`` and ``wide/right`` (independent,
layer 0) and ``wide/below`` (layer 1, below ``left``), 200 samples in buckets of 50: 4 buckets each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import os
from pathlib import Path

import polars as pl
import pytest

from metaxy_core.cli.app import main
from metaxy_core.config import MetaxyConfig
from metaxy_core.graph import FeatureGraph, FeatureKey
from metaxy_core.migrations.executor import MigrationExecutor
from metaxy_core.migrations.lock import LockedError, LockLostError, StoreLock
from metaxy_core.migrations.progress import read_states
from metaxy_core.migrations.state import MigrationState
from metaxy_core.migrations.units import Unit, layers, plan_units, run_unit, unit_shares
from metaxy_core.store.buckets import Partitioning
from metaxy_core.store.system import LOCK, read_system
from metaxy_core.testing.scaleout import (
    BELOW,
    DOWNSTREAM,
    KILL_ENV,
    LEFT,
    MIGRATION_ID,
    RIGHT,
    IdType,
    data_commits,
    latest_views,
    scaleout_graph,
    write_scaleout_project,
)

SAMPLES, BUCKET_ROWS = 200, 50
_ID_DTYPES = {"int": pl.Int64, "string": pl.String, "date": pl.Date, "datetime": pl.Datetime("us", "UTC")}


def project(root: Path) -> Path:
    with FeatureGraph().use():
        return write_scaleout_project(root, samples=SAMPLES, bucket_rows=BUCKET_ROWS)


def cli(config: Path, *args: str) -> tuple[int, str]:
    err = io.StringIO()
    with FeatureGraph().use(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["--config", str(config), *args])
    return code, err.getvalue()


def worker_processes(config: Path) -> set[str]:
    """Processes (random per-process ids, never reused) that joined a lease as members of a run."""
    store = MetaxyConfig.load(config).get_store()
    events = read_system(store, LOCK)
    assert events is not None
    joined = events.filter(pl.col("event") == "acquire")
    return set(joined["process"].to_list()) - set(joined.head(1)["process"].to_list())


def test_two_workers_give_the_latest_view_of_the_sequential_apply(tmp_path: Path) -> None:
    sequential, parallel = project(tmp_path / "seq"), project(tmp_path / "par")

    assert cli(sequential, "migrations", "apply")[0] == 0
    code, err = cli(parallel, "migrations", "apply", "--workers", "2")
    assert code == 0, err

    expected, got = latest_views(sequential), latest_views(parallel)
    for key in DOWNSTREAM:
        assert got[key].height == SAMPLES
        assert got[key].equals(expected[key]), key
        assert f"{key.rsplit('/', 1)[-1]}_value" in got[key].columns  # the user column was carried
        # one commit per bucket, as the sequential run makes: no bucket was written twice
        assert data_commits(parallel)[key] == data_commits(sequential)[key] == 1 + SAMPLES // BUCKET_ROWS
    assert len(worker_processes(parallel)) == 2  # the units ran in both worker processes
    state = read_states(MetaxyConfig.load(parallel).get_store(), "wide")[MIGRATION_ID]
    assert state.completed
    assert sorted(f for (_, f) in state.steps) == sorted(DOWNSTREAM)
    assert {s.rows for s in state.steps.values()} == {SAMPLES}


@pytest.mark.parametrize("id_type", ["int", "string", "date", "datetime"])
def test_workers_on_clustered_files_give_the_sequential_result_for_every_id_type(
    tmp_path: Path, id_type: IdType
) -> None:
    """Four seed commits of 50 samples each: files clustered on the id. Integer and string ids get id *range*
    buckets, whose cuts travel to the spawned workers as JSON; dates and times (no range plan for them yet)
    hash buckets. Either way the workers' result is the sequential one."""

    def clustered(root: Path) -> Path:
        with FeatureGraph().use():
            return write_scaleout_project(
                root, samples=SAMPLES, bucket_rows=BUCKET_ROWS, seed_chunk=BUCKET_ROWS, id_type=id_type
            )

    sequential, parallel = clustered(tmp_path / "seq"), clustered(tmp_path / "par")
    with FeatureGraph().use():
        cfg = MetaxyConfig.load(parallel)
        graph = cfg.load_features()
        executor = MigrationExecutor(cfg.get_store(), project="wide", graph=graph, batch_rows=BUCKET_ROWS)
        migration = cfg.load_chain(graph).get(MIGRATION_ID)
        planned = plan_units(executor, migration, 0, MigrationState(migration_id=MIGRATION_ID))
    cuts = planned[0][0].boundaries
    assert (cuts is not None and len(cuts) == 3) if id_type in ("int", "string") else cuts is None

    assert cli(sequential, "migrations", "apply")[0] == 0
    code, err = cli(parallel, "migrations", "apply", "--workers", "2")
    assert code == 0, err
    expected, got = latest_views(sequential), latest_views(parallel)
    for key in DOWNSTREAM:
        assert got[key].height == SAMPLES and got[key].equals(expected[key]), key
        assert got[key].schema["sample_uid"] == _ID_DTYPES[id_type]


@pytest.mark.parametrize(
    "cuts",
    [
        pl.Series([5, 2**40]),
        pl.Series([2**63 + 5], dtype=pl.UInt64),
        pl.Series(["a\u00e9", "zz"]),
        pl.Series([dt.date(2026, 1, 5), dt.date(2026, 3, 1)]),
        pl.Series([dt.datetime(2026, 1, 5, 12, 30, 1, 1234, tzinfo=dt.UTC)], dtype=pl.Datetime("us", "UTC")),
        pl.Series([dt.datetime(2026, 1, 5, 12, 30, 1, 123456)], dtype=pl.Datetime("ns")),
        pl.Series([dt.time(3, 4, 5)]),
    ],
    ids=lambda s: str(s.dtype),
)
def test_range_cuts_of_every_id_type_survive_the_units_json(cuts: pl.Series) -> None:
    """A unit's range cuts are rebuilt in another process from JSON with their exact type and values
    (JSON alone turns dates and times into strings, which polars 2 no longer casts back)."""
    plan = Partitioning(len(cuts) + 1, ("sample_uid",), cuts)
    unit = Unit(
        migration_id="m",
        op_index=0,
        feature="f",
        buckets=(0,),
        bucket_count=plan.k,
        ids=plan.ids,
        boundaries=Unit.cuts_of(plan),
    )
    rebuilt = Unit.model_validate_json(unit.model_dump_json()).partitioning(cuts.dtype).boundaries
    assert rebuilt is not None and rebuilt.dtype == cuts.dtype
    assert rebuilt.to_list() == cuts.to_list()


def test_a_rerun_after_workers_resumes_without_writing_twice(tmp_path: Path) -> None:
    config = project(tmp_path / "p")
    assert cli(config, "migrations", "apply", "--workers", "2")[0] == 0
    commits = data_commits(config)
    views = latest_views(config)

    # Run the units of the whole operation again by hand (as a resumed run would): nothing new is written.
    with FeatureGraph().use():
        cfg = MetaxyConfig.load(config)
        graph = cfg.load_features()
        store = cfg.get_store()
        migration = cfg.load_chain(graph).get(MIGRATION_ID)
        executor = MigrationExecutor(store, project="wide", graph=graph, batch_rows=BUCKET_ROWS)
        fresh = dataclasses.replace(read_states(store, "wide")[MIGRATION_ID], steps={})
        planned = plan_units(executor, migration, 0, fresh)
        with executor.lock:
            results = [run_unit(executor, migration, unit) for layer in planned for unit in layer]
    assert {r.status for r in results} == {"completed"} and sum(r.rows for r in results) == 0
    assert data_commits(config) == commits
    assert all(latest_views(config)[key].equals(views[key]) for key in DOWNSTREAM)


def test_units_are_planned_per_layer_and_bucket_and_travel_as_json(tmp_path: Path) -> None:
    config = project(tmp_path / "p")
    with FeatureGraph().use():
        cfg = MetaxyConfig.load(config)
        graph = cfg.load_features()
        store = cfg.get_store()
        migration = cfg.load_chain(graph).get(MIGRATION_ID)
        executor = MigrationExecutor(store, project="wide", graph=graph, batch_rows=BUCKET_ROWS)
        planned = plan_units(executor, migration, 0, MigrationState(migration_id=MIGRATION_ID))
    assert [sorted({u.feature for u in layer}) for layer in planned] == [sorted([LEFT, RIGHT]), [BELOW]]
    for layer in planned:
        per_feature: dict[str, list[int]] = {}
        for unit in layer:
            assert unit.buckets is not None and unit.bucket_count == 4
            per_feature.setdefault(unit.feature, []).extend(unit.buckets)
            assert Unit.model_validate_json(unit.model_dump_json()) == unit
        assert all(sorted(b) == [0, 1, 2, 3] for b in per_feature.values())  # every bucket, once
    # one file per table: hash buckets, so 2 units of 2 interleaved buckets each (sqrt(4)) per feature
    assert len({u.key for layer in planned for u in layer}) == 6  # unique Dagster mapping keys
    assert unit_shares(Partitioning(4, ("sample_uid",))) == [(0, 2), (1, 3)]
    ranges = Partitioning(3, ("sample_uid",), pl.Series([10, 20]))
    assert unit_shares(ranges) == [(0,), (1,), (2,)]  # id ranges: one bucket per unit
    depth = layers(scaleout_graph(2), [FeatureKey(k) for k in (BELOW, LEFT, RIGHT)])
    assert {str(k): v for k, v in depth.items()} == {LEFT: 0, RIGHT: 0, BELOW: 1}


def test_workers_share_the_run_lease_and_leave_it_to_their_coordinator(tmp_path: Path) -> None:
    config = project(tmp_path / "p")
    store = MetaxyConfig.load(config).get_store()
    with pytest.raises(LockLostError):  # a worker never starts a lease its run does not hold
        StoreLock(store, "run-a", member=True, heartbeat=False).acquire()

    coordinator = StoreLock(store, "run-a", heartbeat=False)
    with coordinator:
        worker = StoreLock(store, "run-a", member=True, heartbeat=False, pid=os.getpid())
        with worker:
            assert worker.token == coordinator.token  # one fencing token for the whole run
        lease = coordinator.lease()
        assert lease is not None and lease.owner == "run-a"  # the worker left without releasing it
        with pytest.raises(LockedError, match="locked by run run-a"):
            StoreLock(store, "run-b", heartbeat=False).acquire()
    assert coordinator.lease() is None  # the coordinator released it at the end


def test_workers_below_one_are_refused_with_one_failed_line(tmp_path: Path) -> None:
    config = project(tmp_path / "p")
    code, err = cli(config, "migrations", "apply", "--workers", "0")
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("FAILED:")] == [
        "FAILED: --workers 0: give 1 or more worker processes"
    ]


def test_a_worker_killed_mid_unit_fails_the_apply_and_the_next_apply_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, config = project(tmp_path / "seq"), project(tmp_path / "par")
    assert cli(reference, "migrations", "apply")[0] == 0
    # The first worker to reach a bulk commit is SIGKILLed: its bucket is computed, not committed.
    monkeypatch.setenv(KILL_ENV, str(tmp_path / "killed"))
    code, err = cli(config, "migrations", "apply", "--workers", "2")
    failed = [line for line in err.splitlines() if line.startswith("FAILED:")]
    assert code == 1 and len(failed) == 1, err
    assert "its worker process died" in failed[0] and "bucket" in failed[0] and "re-run" in failed[0]
    state = read_states(MetaxyConfig.load(config).get_store(), "wide")[MIGRATION_ID]
    assert not state.completed

    code, err = cli(config, "migrations", "apply")  # the lease was released: the next apply resumes at once
    assert code == 0, err
    expected, got = latest_views(reference), latest_views(config)
    for key in DOWNSTREAM:
        assert got[key].equals(expected[key]), key
        assert data_commits(config)[key] == data_commits(reference)[key]  # no bucket committed twice
