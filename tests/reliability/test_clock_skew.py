"""Hosts whose clocks disagree by hours: writers, appliers, rollbacks and the lock behave exactly as with
equal clocks. Each command is a real ``metaxy`` process whose clock is shifted by
``METAXY_CLOCK_OFFSET_SECONDS`` (the one clock every timestamp the store writes comes from)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations.lock import StoreLock

from . import _support as s

AHEAD, BEHIND = str(2 * 3600), str(-2 * 3600)
WRITER = """
import sys
import polars as pl
from relfeatures import RAW, build_graph
from metaxy_core import DeltaMetadataStore
store = DeltaMetadataStore("store", project="rel")
uids = [f"s{i:06d}" for i in range(0, 600, 7)]
rows = pl.DataFrame({"sample_uid": uids, "path": [f"{sys.argv[1]}/{u}" for u in uids]}).with_columns(
    pl.struct(frames=pl.lit("f") + pl.col("sample_uid"), audio=pl.lit("a") + pl.col("sample_uid")).alias(
        "metaxy_provenance_by_field"
    )
)
store.write_metadata(RAW, rows, graph=build_graph("1"))
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return s.make_seeded_project(tmp_path_factory.mktemp("skew") / "template")


def _store(project: Path) -> DeltaMetadataStore:
    return DeltaMetadataStore(project / "store", project=s.PROJECT)


def _cli(project: Path, offset: str, *args: str, extra: dict[str, str] | None = None) -> Any:
    out = s.run_cli(list(args), project, {"METAXY_CLOCK_OFFSET_SECONDS": offset, **(extra or {})})
    return out


def _status(project: Path, offset: str) -> list[dict[str, Any]]:
    out = _cli(project, offset, "migrations", "status", "--format", "json")
    assert out.returncode == 0, s.output(out)
    return [
        {k: row[k] for k in ("migration_id", "status", "rows", "steps_done")}
        for row in json.loads(out.stdout)
    ]


def _journey(project: Path, clocks: tuple[str, str, str, str]) -> list[Any]:
    """apply, rollback, apply again and a concurrent writer, each step on its own clock; what each shows."""
    apply_1, rollback, apply_2, writer = clocks
    seen: list[Any] = []
    for offset, args in ((apply_1, ["apply"]), (rollback, ["rollback"]), (apply_2, ["apply"])):
        out = _cli(project, offset, "migrations", *args)
        assert out.returncode == 0, s.output(out)
        seen.append(_status(project, rollback))  # read on yet another clock
        seen.append(s.latest_views(_store(project), s.G2 if args == ["apply"] else s.G1))
        assert StoreLock(_store(project), "checker").holder() is None
    # a pipeline (old code) writes raw rows on its own clock after the migration: they are the latest
    subprocess.run(
        [sys.executable, "-c", WRITER, "pipeline"],
        cwd=project,
        env=s.clean_env({"METAXY_CLOCK_OFFSET_SECONDS": writer, "PYTHONPATH": str(project)}),
        check=True,
        capture_output=True,
    )
    raw = _store(project).read_metadata("video/raw", graph=s.G2).collect()
    seen.append(raw.filter(pl.col("path").str.starts_with("pipeline/")).height)
    return seen


def _equal(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, dict):
            s.assert_frames_equal(g, w)
        else:
            assert g == w


def test_apply_rollback_apply_and_writers_on_clocks_hours_apart_behave_as_with_equal_clocks(
    template: Path, tmp_path: Path
) -> None:
    equal = _journey(s.copy_project(template, tmp_path / "equal"), ("0", "0", "0", "0"))
    assert equal[0][0]["status"] == "completed" and equal[2][0]["status"] == "not_started"
    assert equal[-1] == 86  # every row the pipeline wrote is the latest of its sample
    # the applier's clock ahead, the rollback's behind (the rollback looks older than the apply it undoes),
    # the writer's behind the applier's: its rows look 4 h older than the migration's
    _equal(_journey(s.copy_project(template, tmp_path / "a"), (AHEAD, BEHIND, AHEAD, BEHIND)), equal)
    _equal(_journey(s.copy_project(template, tmp_path / "b"), (BEHIND, AHEAD, BEHIND, AHEAD)), equal)


@pytest.mark.parametrize(("holder", "contender"), [(BEHIND, AHEAD), (AHEAD, BEHIND)])
def test_a_live_lease_holds_whatever_the_holders_and_contenders_clocks(
    template: Path, tmp_path: Path, holder: str, contender: str
) -> None:
    """A contender whose clock is 4 h ahead of the holder's must not see the lease as expired (lease 60 s),
    and a holder whose clock is ahead must not make the next apply fail with a false takeover."""
    project = s.copy_project(template, tmp_path / "p")
    log = tmp_path / "holder.log"
    env = {"METAXY_CLOCK_OFFSET_SECONDS": holder, "METAXY_LOCK_TTL_SECONDS": "60", "REL_SLEEP_S": "0"}
    running = s.spawn_cli(
        ["migrations", "apply"],
        project,
        {**env, "REL_WAIT_FOR": str(tmp_path / "go"), "METAXY_TEST_HOOK": json.dumps({"log": str(log)})},
        hook=True,
    )
    deadline = time.monotonic() + 60
    while '"event": "acquire"' not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and running.poll() is None
        time.sleep(0.05)
    refused = _cli(project, contender, "migrations", "apply", extra={"METAXY_LOCK_TTL_SECONDS": "60"})
    assert refused.returncode == 1 and "FAILED: the store is locked by run" in refused.stderr, s.output(
        refused
    )
    assert f"pid {running.pid}" in refused.stderr
    (tmp_path / "go").touch()
    out, err = running.communicate(timeout=120)
    assert running.returncode == 0, out + err  # never "lost the migration lock"
    again = _cli(project, contender, "migrations", "rollback")  # the next run takes the free lock at once
    assert again.returncode == 0, s.output(again)
    assert _status(project, holder)[0]["status"] == "not_started"
