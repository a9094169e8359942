"""Local worker processes for ``metaxy migrations apply --workers N``: units of work run in parallel.

The command's process is the run's coordinator: it holds the store's lease (and heartbeats) for the whole
apply, plans each operation's units (:mod:`metaxy_core.migrations.units`) and records every step once its
units are done. Workers are *spawned* (never forked: delta-rs is loaded in the coordinator, and a fork of
it can deadlock), rebuild the project from the same configuration, join the coordinator's lease as members
(same run id and fencing token; liveness follows the coordinator) and run one unit at a time.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from metaxy_core.config import MetaxyConfig
from metaxy_core.errors import redact
from metaxy_core.migrations.executor import MigrationExecutor
from metaxy_core.migrations.lock import StoreLock
from metaxy_core.migrations.models import Migration
from metaxy_core.migrations.results import StepStatus
from metaxy_core.migrations.units import Unit, UnitResult, run_unit

#: the worker's project, built once per process by :func:`_start_worker`
_WORKER: dict[str, Any] = {}


class WorkerPool:
    """A :data:`~metaxy_core.migrations.units.UnitRunner` over ``workers`` spawned processes; a context
    manager (the processes end with it).

    Args:
        config: the project's configuration (workers rebuild the store, graph and chain from it).
        workers: how many processes run units at once.
        run_id: the coordinator's run id: workers join its lease.
        batch_rows: samples per bucket, as the coordinator planned them.
        force: accept edited migration files, as the coordinator does.
    """

    def __init__(
        self, config: MetaxyConfig, *, workers: int, run_id: str, batch_rows: int, force: bool = False
    ) -> None:
        setup = {
            "config": {
                **config.model_dump(mode="json"),
                "config_file": str(config.config_file) if config.config_file else None,
                "root_dir": str(config.root_dir),
            },
            "run_id": run_id,
            "batch_rows": batch_rows,
            "force": force,
            "coordinator_pid": os.getpid(),
        }
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(setup,),
        )

    def __call__(self, migration: Migration, units: list[Unit]) -> list[UnitResult]:
        """Run ``units`` (independent: one layer) on the workers; a unit whose worker died is failed."""
        futures: dict[Future[str], Unit] = {
            self._pool.submit(_run, migration.migration_id, unit.model_dump_json()): unit for unit in units
        }
        results: dict[str, UnitResult] = {}
        for future in as_completed(futures):
            unit = futures[future]
            try:
                results[unit.key] = UnitResult.model_validate_json(future.result())
            except BrokenProcessPool:
                results[unit.key] = UnitResult(
                    unit=unit,
                    status=StepStatus.FAILED,
                    error="its worker process died (killed, or out of memory: lower bucket_rows)",
                )
        return [results[u.key] for u in units]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_worker(setup: dict[str, Any]) -> None:
    """Build the worker's project once: configuration, features, store, chain, and an executor whose lock
    only joins the coordinator's lease."""
    config = MetaxyConfig.model_validate(setup["config"])
    graph = config.load_features()
    store = config.get_store()
    executor = MigrationExecutor(
        store,
        project=config.project,
        graph=graph,
        run_id=setup["run_id"],
        force=setup["force"],
        batch_rows=setup["batch_rows"],
    )
    executor.lock = StoreLock(store, setup["run_id"], member=True, pid=setup["coordinator_pid"])
    _WORKER.update(executor=executor, chain=config.load_chain(graph))


def _run(migration_id: str, unit_json: str) -> str:
    """Run one unit under the coordinator's lease; the result as JSON (it crosses the process boundary)."""
    executor: MigrationExecutor = _WORKER["executor"]
    unit = Unit.model_validate_json(unit_json)
    try:
        migration = _WORKER["chain"].get(migration_id)
        with executor.lock:
            result = run_unit(executor, migration, unit)
    except Exception as exc:  # joining the lease failed, or the migration is gone: the unit failed
        error = redact(str(exc), executor.store.secrets)
        result = UnitResult(unit=unit, status=StepStatus.FAILED, error=error, pid=os.getpid())
    return result.model_dump_json()
