"""Progress of long steps, reported while they run: rows done / total, rate and ETA, through one callback."""

from __future__ import annotations

import mxtest_support as s

from metaxy_core.migrations import MigrationExecutor, load_chain
from metaxy_core.reporting import Progress, ProgressMeter, throttled

MID = "20250601_000000_reconcile"


class Recorder:
    """Progress updates and finished steps, in the order the executor reported them."""

    def __init__(self) -> None:
        self.events: list[Progress | str] = []

    def progress(self, progress: Progress) -> None:
        self.events.append(progress)

    def step(self, step) -> None:
        self.events.append(f"step {step.op_id} on {step.feature_key}")

    def updates(self, label: str) -> list[Progress]:
        return [e for e in self.events if isinstance(e, Progress) and e.label == label]


def test_reconciliation_reports_after_every_bucket_before_its_step_finishes(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=200, n_emb=200)
    store.push_snapshot(g2, project=s.PROJECT)
    s.write_migration(mig_dir, MID, from_=g1.snapshot_version, to=g2.snapshot_version)
    seen = Recorder()
    executor = MigrationExecutor(store, graph=g2, batch_rows=40, on_step=seen.step, on_progress=seen.progress)
    [result] = executor.apply(load_chain(mig_dir))
    assert result.rows_total == 200
    label = f"{MID}: reconcile on {s.EMB}"
    updates = seen.updates(label)
    assert len(updates) >= 4  # one per bucket (200 rows in buckets of 40), then the finish
    assert [u.done for u in updates] == sorted(u.done for u in updates) and updates[0].done > 0
    assert all(u.total == 200 and u.unit == "rows" for u in updates[:-1])
    assert updates[-1].finished and updates[-1].done == updates[-1].total == 200
    assert all(u.eta_s is not None and u.rate for u in updates[:-1])
    # while the step runs: every update comes before the step's result
    assert seen.events.index(f"step reconcile on {s.EMB}") > seen.events.index(updates[-1])


def test_dry_run_reports_the_same_progress(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=120, n_emb=120)
    store.push_snapshot(g2, project=s.PROJECT)
    s.write_migration(mig_dir, MID, from_=g1.snapshot_version, to=g2.snapshot_version)
    seen = Recorder()
    MigrationExecutor(store, graph=g2, batch_rows=40, on_progress=seen.progress).apply(
        load_chain(mig_dir), dry_run=True
    )
    updates = seen.updates(f"{MID}: reconcile on {s.EMB}")
    assert len(updates) >= 3 and updates[-1].finished and updates[-1].done == 120


def test_a_backfill_reports_through_step_progress_without_a_context(store, mig_dir):
    g = s.make_graph()
    s.seed(store, g, n_raw=10, n_emb=None)
    op = {"type": "mxtest_ops.BatchedBackfillRaw", "feature_key": s.RAW, "start": 500, "count": 40}
    s.write_migration(mig_dir, MID, ops=[op], kind="full_graph")
    seen = Recorder()
    MigrationExecutor(store, graph=g, on_step=seen.step, on_progress=seen.progress).apply(load_chain(mig_dir))
    updates = seen.updates(f"{MID}: batched_backfill_raw on {s.RAW}")
    assert [u.done for u in updates] == [10, 20, 30, 40, 40] and updates[-1].finished
    assert seen.events[-1] == f"step batched_backfill_raw on {s.RAW}"


def test_progress_line_says_done_total_rate_and_eta():
    p = Progress("m: reconcile on video/emb", done=1_200_000, total=3_000_000, elapsed_s=2.0)
    assert p.describe() == "m: reconcile on video/emb: 1,200,000 / 3,000,000 rows (40%), 600k rows/s, ETA 3s"
    done = Progress("m: x on f", done=10, total=10, unit="tables", elapsed_s=125, finished=True)
    assert done.describe() == "m: x on f: 10 / 10 tables (100%), 0 tables/s, done in 2m05s"


def test_throttled_passes_the_first_every_tenth_and_every_ten_seconds_and_the_last():
    now = [0.0]
    passed: list[int] = []
    log = throttled(lambda p: passed.append(p.done), clock=lambda: now[0])
    meter = ProgressMeter("step", log, total=1000, clock=lambda: now[0])
    for done in range(0, 1001, 10):  # 100 updates, 1 s apart after the 50th
        if done > 500:
            now[0] += 1.0
        meter.update(done)
    meter.finish()
    # first, then every 10 % up to 500 (no time passes), then every 10 s (10 % = 10 updates too), then the end
    assert passed[0] == 0 and passed[-1] == 1000
    assert passed[:7] == [0, 100, 200, 300, 400, 500, 600]
    assert len(passed) <= 13
