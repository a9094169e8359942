"""SIGKILL at random points of ``metaxy migrations apply``; the re-run must finish as if nothing happened.

One seeded project (four features, 600 samples, a two-operation reconciliation migration committing every 40
rows: 56 Delta commits per apply) is copied per trial. An uninterrupted apply is the reference. Each trial
kills the apply (``killhook.py``) at a point drawn with a fixed seed -- inside a data commit, inside each
progress-log update, right after a step completed (between features / between operations), inside a lock
commit, after a random delay, or twice in a row -- then runs the real ``metaxy migrations apply`` and
compares: the same rows in every latest view (all columns but timestamps and write ids), no sample written
twice at the new version, each step recorded done exactly once, the migration completed, the lock free.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from metaxy_core import DeltaMetadataStore

from . import _support as s

SEED = 20250101
SIGKILL_RC = -9


@pytest.fixture(scope="module")
def crash_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return s.make_seeded_project(tmp_path_factory.mktemp("crash") / "template")


def _spill_env(project: Path) -> dict[str, str]:
    """Spill files of bucketed reconciliation go to the project's own folder, to be checked afterwards."""
    return {"METAXY_SPILL_DIR": str(project / "spill")}


def _run_hooked(project: Path, plan: dict[str, Any]) -> tuple[int, str]:
    env = {"METAXY_TEST_HOOK": json.dumps(plan), **_spill_env(project)}
    proc = s.spawn_cli(["migrations", "apply"], project, env, hook=True)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def _commits(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _plan(reference: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """24 trials (26 kills) spread over the kinds of kill point."""
    data = [c["n"] for c in reference if c["kind"] == "data"]
    events = [c for c in reference if c["kind"] == "progress"]
    locks = [c["n"] for c in reference if c["kind"] == "lock"]
    step_done = [
        c["n"]
        for c in events
        if c["event"].startswith("completed:") and not c["event"].startswith("completed:-1")
    ]
    first, last = reference[0]["t"], reference[-1]["t"]
    trials: list[dict[str, Any]] = []
    for n in rng.sample(data, 8):  # mid-write of a reconciliation batch
        trials.append(
            {
                "label": "mid-write (data commit)",
                "kills": [{"kill_at": n, "how": "during", "delay": rng.uniform(0, 0.01)}],
            }
        )
    for c in events:  # inside every progress-log update: started, each step done, migration completed
        trials.append(
            {
                "label": "during progress-log update",
                "kills": [{"kill_at": c["n"], "how": "during", "delay": rng.uniform(0, 0.01)}],
            }
        )
    for n in step_done:  # the step is recorded, the next one has not started
        label = "between operations" if n == step_done[1] else "between features"
        trials.append({"label": label, "kills": [{"kill_at": n, "how": "after"}]})
    for n in rng.sample(locks, 2):
        trials.append(
            {
                "label": "lock commit",
                "kills": [
                    {
                        "kill_at": n,
                        "how": rng.choice(["before", "during", "after"]),
                        "delay": rng.uniform(0, 0.01),
                    }
                ],
            }
        )
    for _ in range(4):
        trials.append(
            {
                "label": "random delay",
                "kills": [{"timer": round(rng.uniform(first, first + 0.7 * (last - first)), 3)}],
            }
        )
    for _ in range(2):
        trials.append(
            {
                "label": "killed twice",
                "kills": [
                    {"kill_at": rng.choice(data), "how": "during", "delay": rng.uniform(0, 0.01)},
                    {
                        "kill_at": rng.randint(1, 30),
                        "how": rng.choice(["before", "during", "after"]),
                        "delay": rng.uniform(0, 0.01),
                    },
                ],
            }
        )
    return trials


def _trial(
    index: int, trial: dict[str, Any], template: Path, workdir: Path, want: dict[str, Any]
) -> dict[str, Any]:
    project = s.copy_project(template, workdir / f"trial{index:02d}")
    killed, where = 0, []
    for k, kill in enumerate(trial["kills"]):
        log = workdir / f"trial{index:02d}.{k}.log"
        rc, text = _run_hooked(project, {**kill, "log": str(log)})
        commits = _commits(log)
        if rc == SIGKILL_RC:
            killed += 1
            where.append(commits[-1] if commits else {"kind": "before any commit"})
        else:  # only a second kill may miss (the resumed run is shorter than the drawn point)
            assert k > 0 and rc == 0, (
                f"trial {index} ({trial['label']}): exited {rc} instead of being killed:\n{text}"
            )
    rerun = s.run_cli(["migrations", "apply"], project, _spill_env(project))
    assert rerun.returncode == 0, f"trial {index} ({trial['label']}) re-run failed:\n{s.output(rerun)}"
    spill = project / "spill"
    leftovers = sorted(p.name for p in spill.iterdir()) if spill.exists() else []
    assert not leftovers, f"trial {index}: spill files of killed runs were left behind: {leftovers}"
    store = DeltaMetadataStore(project / "store", project=s.PROJECT)
    views = s.latest_views(store)
    s.assert_frames_equal(views, want)
    s.assert_no_duplicates(store, views)
    s.assert_log_consistent(store)
    if index < 2:  # the CLI agrees: completed, and nothing left to apply
        status = s.run_cli(["migrations", "status", "--format", "json"], project)
        assert status.returncode == 0 and json.loads(status.stdout)[0]["status"] == "completed"
        again = s.run_cli(["migrations", "apply"], project)
        assert again.returncode == 0 and "nothing to apply" in again.stdout
    return {"killed": killed, "where": where, "label": trial["label"]}


def test_sigkill_anywhere_in_an_apply_then_rerun_equals_an_uninterrupted_apply(
    crash_template: Path, tmp_path: Path
) -> None:
    reference = s.copy_project(crash_template, tmp_path / "reference")
    rc, text = _run_hooked(reference, {"log": str(tmp_path / "reference.log")})
    assert rc == 0, text
    ref_commits = _commits(tmp_path / "reference.log")
    ref_store = DeltaMetadataStore(reference / "store", project=s.PROJECT)
    want = s.latest_views(ref_store)
    # the reference itself is right: every sample carried over with its user columns, nothing recomputed
    assert {k: v.height for k, v in want.items()} == {k: s.N_ROWS for k in want}
    assert want["video/joint"]["score"].null_count() == 0 and set(want["video/cap"]["text"]) == {"a caption"}
    s.assert_no_duplicates(ref_store, want)
    s.assert_log_consistent(ref_store)

    trials = _plan(ref_commits, random.Random(SEED))
    assert len(trials) >= 20
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:  # each trial is its own processes and store copy
        results = list(
            pool.map(lambda it: _trial(it[0], it[1], crash_template, tmp_path, want), enumerate(trials))
        )
    kills = sum(r["killed"] for r in results)
    kinds = Counter(w.get("kind", "?") for r in results for w in r["where"])
    summary = {
        "trials": len(results),
        "sigkills": kills,
        "rows_lost": 0,
        "kill_points_by_table_kind": dict(kinds),
        "by_label": dict(Counter(r["label"] for r in results)),
        "seconds": round(time.monotonic() - start, 1),
    }
    print("crash summary:", json.dumps(summary))
    assert kills >= 24, summary
    assert {"data", "progress", "lock"} <= set(kinds), summary


def _stray_files(root: Path) -> list[str]:
    """Files under a store's feature tables (data files, and the staging files a killed local write leaves)
    that no commit of their Delta log ever added."""
    stray = []
    for table in (p for p in root.iterdir() if (p / "_delta_log").is_dir()):
        added = {
            json.loads(line)["add"]["path"]
            for commit in (table / "_delta_log").glob("*.json")
            for line in commit.read_text().splitlines()
            if '"add"' in line
        }
        stray += [f"{table.name}/{f.name}" for f in table.iterdir() if f.is_file() and f.name not in added]
    return stray


def test_sigkill_while_a_bucket_is_written_as_several_files_then_rerun_removes_them_and_equals_the_reference(
    crash_template: Path, tmp_path: Path
) -> None:
    # Buckets in id order are written as files of at most FILE_ROWS rows, two at a time: 16 here, so every
    # 40-row bucket is 3 files. Each trial kills the apply once a drawn number of those files is written
    # (the bucket's other files in flight or not started, its commit not made): files no commit added are
    # left, in half the trials the last one cut midway (a truncated file cannot be read to learn whose it
    # is: local files are written under a staging name carrying the step's write id, then renamed). The
    # re-run finishes as if nothing happened and removes them all.
    reference = s.copy_project(crash_template, tmp_path / "reference")
    rc, text = _run_hooked(reference, {"log": str(tmp_path / "reference.log"), "file_rows": 16})
    assert rc == 0, text
    want = s.latest_views(DeltaMetadataStore(reference / "store", project=s.PROJECT))
    assert not _stray_files(reference / "store")
    adds = [
        sum('"add"' in line for line in commit.read_text().splitlines())
        for commit in (reference / "store").glob("*/_delta_log/*.json")
    ]
    assert max(adds) >= 3  # the buckets were written as several files
    rng = random.Random(SEED + 1)
    for i, after in enumerate(sorted(rng.sample(range(1, sum(a for a in adds if a >= 2)), 4))):
        project = s.copy_project(crash_template, tmp_path / f"files{i}")
        plan = {
            "log": str(tmp_path / f"files{i}.log"),
            "file_rows": 16,
            "kill_after_files": after,
            "truncate_last": i % 2 == 0,
        }
        rc, text = _run_hooked(project, plan)
        assert rc == SIGKILL_RC, f"not killed after {after} files:\n{text}"
        assert _stray_files(project / "store"), f"killed after {after} files, yet no uncommitted file"
        rerun = s.run_cli(["migrations", "apply"], project, _spill_env(project))
        assert rerun.returncode == 0, s.output(rerun)
        store = DeltaMetadataStore(project / "store", project=s.PROJECT)
        views = s.latest_views(store)
        s.assert_frames_equal(views, want)
        s.assert_no_duplicates(store, views)
        s.assert_log_consistent(store)
        assert not _stray_files(project / "store"), f"killed after {after} files: files left behind"
