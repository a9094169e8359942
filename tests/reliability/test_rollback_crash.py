"""SIGKILL at random points of ``metaxy migrations rollback``: status always tells the truth, apply refuses
to run over a half-done rollback, and running the rollback again completes it.

One seeded project is applied once (the *applied* view) and kept as the template; its views before the apply
are the *rolled back* view. A reference rollback logs its Delta commits (lock, ``rolling_back`` event, one
retraction per feature, ``rolled_back`` event, release). Each trial copies the applied project, kills a
rollback before, during or after one of those commits (or after a random delay), then checks:

* ``status`` says ``completed`` only if nothing is hidden (the view is the applied one), ``rolling_back``
  while anything may be, and ``not_started`` only once everything is (the rolled-back view);
* ``apply`` refuses a migration whose rollback is unfinished, naming ``metaxy migrations rollback``;
* a second ``metaxy migrations rollback`` finishes: the rolled-back view, status ``not_started``, lock free.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations.lock import StoreLock

from . import _support as s

SEED = 20250202
SIGKILL_RC = -9


def _store(project: Path) -> DeltaMetadataStore:
    return DeltaMetadataStore(project / "store", project=s.PROJECT)


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The applied template project, its views before (G1) and after the apply (G2)."""
    base = tmp_path_factory.mktemp("rollback-crash")
    template = s.make_seeded_project(base / "template")
    before = s.latest_views(_store(template), s.G1)
    done = s.run_cli(["migrations", "apply"], template)
    assert done.returncode == 0, s.output(done)
    return {"template": template, "before": before, "after": s.latest_views(_store(template), s.G2)}


def _status(project: Path) -> str:
    out = s.run_cli(["migrations", "status", "--format", "json"], project)
    assert out.returncode == 0, s.output(out)
    return json.loads(out.stdout)[0]["status"]


def _commits(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _rollback(project: Path, plan: dict[str, Any]) -> tuple[int, str]:
    proc = s.spawn_cli(["migrations", "rollback"], project, {"METAXY_TEST_HOOK": json.dumps(plan)}, hook=True)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def _plan(reference: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """12 trials: before anything, around the ``rolling_back`` event, after each retraction and inside one,
    around the ``rolled_back`` event, inside the lock release, and at two random times."""
    by_kind: dict[str, list[int]] = {}
    for c in reference:
        by_kind.setdefault(c["kind"], []).append(c["n"])
    started, finished = by_kind["progress"]
    retractions = by_kind["retraction"]
    points = [(1, "before"), (started, "during"), (started, "after")]
    points += [(n, "after") for n in retractions] + [(rng.choice(retractions), "during")]
    points += [(finished, "before"), (finished, "after"), (by_kind["lock"][-1], "during")]
    trials: list[dict[str, Any]] = [
        {"label": f"{how} commit {n} ({reference[n - 1]['kind']})", "kill_at": n, "how": how}
        for n, how in points
    ]
    first, last = reference[0]["t"], reference[-1]["t"]
    trials += [{"label": "random delay", "timer": round(rng.uniform(first, last), 3)} for _ in range(2)]
    for t in trials:
        if t.get("how") == "during":
            t["delay"] = round(rng.uniform(0, 0.01), 4)
    return trials


def _trial(index: int, trial: dict[str, Any], applied: dict[str, Any], workdir: Path) -> dict[str, Any]:
    project = s.copy_project(applied["template"], workdir / f"trial{index:02d}")
    plan = {k: v for k, v in trial.items() if k != "label"}
    log = workdir / f"trial{index:02d}.log"
    rc, text = _rollback(project, {**plan, "log": str(log)})
    commits = _commits(log)
    assert rc in (SIGKILL_RC, 0), f"trial {index} ({trial['label']}): exited {rc}:\n{text}"
    status = _status(project)
    views = s.latest_views(_store(project), s.G2 if status != "not_started" else s.G1)
    if status == "completed":  # nothing may be hidden yet
        s.assert_frames_equal(views, applied["after"])
        assert not any(c["kind"] == "retraction" for c in commits), trial
    elif status == "not_started":  # the rollback finished before the kill
        s.assert_frames_equal(views, applied["before"])
    else:
        assert status == "rolling_back", status
    if status == "rolling_back" and index in (2, 4):  # (two trials: each CLI run costs seconds)
        refused = s.run_cli(["migrations", "apply"], project)
        assert refused.returncode == 1, s.output(refused)
        assert refused.stderr.count("FAILED:") == 1 and "Traceback" not in refused.stderr
        assert f"run `metaxy migrations rollback {s.MIGRATION_ID}` to finish it" in refused.stderr
    rerun = s.run_cli(["migrations", "rollback"], project)
    assert rerun.returncode == 0, f"trial {index} ({trial['label']}): re-run failed\n{s.output(rerun)}"
    assert _status(project) == "not_started"
    s.assert_frames_equal(s.latest_views(_store(project), s.G1), applied["before"])
    assert StoreLock(_store(project), "checker").holder() is None
    return {"label": trial["label"], "killed": rc == SIGKILL_RC, "status": status, "commits": len(commits)}


def test_sigkill_anywhere_in_a_rollback_status_tells_the_truth_and_a_rerun_completes(
    applied: dict[str, Any], tmp_path: Path
) -> None:
    reference = s.copy_project(applied["template"], tmp_path / "reference")
    rc, text = _rollback(reference, {"log": str(tmp_path / "reference.log")})
    assert rc == 0, text
    ref_commits = _commits(tmp_path / "reference.log")
    kinds = [c["kind"] for c in ref_commits]
    assert kinds.count("retraction") == 3 and kinds.count("progress") == 2, ref_commits
    assert _status(reference) == "not_started"
    s.assert_frames_equal(s.latest_views(_store(reference), s.G1), applied["before"])

    trials = _plan(ref_commits, random.Random(SEED))
    assert len(trials) >= 12
    with ThreadPoolExecutor(max_workers=2) as pool:  # each trial: its own processes and store copy
        results = list(pool.map(lambda it: _trial(it[0], it[1], applied, tmp_path), enumerate(trials)))
    summary = {
        "trials": len(results),
        "sigkills": sum(r["killed"] for r in results),
        "status_after_kill": dict(Counter(r["status"] for r in results)),
    }
    print("rollback crash summary:", json.dumps(summary))
    assert summary["sigkills"] >= 11, summary
    assert summary["status_after_kill"].get("rolling_back", 0) >= 3, summary
