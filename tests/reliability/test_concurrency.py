"""Concurrent applies and writers against one store, through the real CLI in separate processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations import progress
from metaxy_core.migrations.lock import StoreLock

from . import _support as s

LOCKED = re.compile(
    r"FAILED: the store is locked by run (?P<run>\S+) \((?P<host>[^,]+), pid (?P<pid>\d+)\) since "
    r"(?P<since>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC"
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 0.6 s pause before each of the three steps: the winner holds the lock for a couple of seconds
    return s.make_seeded_project(
        tmp_path_factory.mktemp("conc") / "template", migration=s.migration_yaml(sleep=0.6)
    )


def _store(project: Path) -> DeltaMetadataStore:
    return DeltaMetadataStore(project / "store", project=s.PROJECT)


def _assert_applied_once(project: Path) -> None:
    store = _store(project)
    views = s.latest_views(store)
    assert {k: v.height for k, v in views.items()} == {k: s.N_ROWS for k in views}
    s.assert_no_duplicates(store, views)
    s.assert_log_consistent(store)


def test_four_applies_at_once_exactly_one_runs_the_others_fail_fast_naming_the_holder(
    template: Path, tmp_path: Path
) -> None:
    project = s.copy_project(template, tmp_path / "p")
    procs = [s.spawn_cli(["migrations", "apply"], project) for _ in range(4)]
    start = time.monotonic()
    ended: dict[int, float] = {}
    while len(ended) < 4:
        for i, p in enumerate(procs):
            if i not in ended and p.poll() is not None:
                ended[i] = time.monotonic() - start
        time.sleep(0.02)
    outs = [p.communicate() for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1, 1, 1], list(zip(codes, outs, strict=True))
    winner = codes.index(0)
    events = progress.read_events(_store(project), s.PROJECT)
    run_id = events.filter(pl.col("status") == progress.COMPLETED)["run_id"][-1]
    for i, (_out, err) in enumerate(outs):
        if i == winner:
            continue
        match = LOCKED.search(err)
        assert match, err
        assert match["run"] == run_id  # names the run that works, its host, pid and start time
        assert int(match["pid"]) == procs[winner].pid
        assert err.count("FAILED:") == 1 and "Traceback" not in err
        assert ended[i] < ended[winner], "a loser waited for the winner instead of failing fast"
    _assert_applied_once(project)


def test_the_lease_of_a_killed_holder_on_this_host_is_taken_over_at_once(
    template: Path, tmp_path: Path
) -> None:
    project = s.copy_project(template, tmp_path / "p")
    log = tmp_path / "kill.log"
    # SIGKILL right after the lease is taken (commit 1 is the `acquire` event)
    killed = s.spawn_cli(
        ["migrations", "apply"],
        project,
        {"METAXY_TEST_HOOK": json.dumps({"log": str(log), "kill_at": 1, "how": "after"})},
        hook=True,
    )
    killed.communicate(timeout=60)
    assert killed.returncode == -9 and '"event": "acquire"' in log.read_text().splitlines()[-1]
    lease = StoreLock(_store(project), "observer").lease()
    assert lease is not None and lease.pid == killed.pid  # the dead holder's lease is still recorded...
    start = time.monotonic()
    rerun = s.run_cli(["migrations", "apply"], project)  # ...with a default TTL of ten minutes
    assert rerun.returncode == 0, s.output(rerun)
    assert time.monotonic() - start < 30
    _assert_applied_once(project)


def _kill_holder_elsewhere(project: Path, tmp_path: Path, ttl: str | None) -> int:
    """An apply that claims to run on another host takes the lease and is SIGKILLed; returns its pid."""
    env = {
        "METAXY_TEST_HOOK": json.dumps(
            {"log": str(tmp_path / "h.log"), "kill_at": 3, "how": "after", "host": "build-agent-7"}
        )
    }
    if ttl:
        env["METAXY_LOCK_TTL_SECONDS"] = ttl
    holder = s.spawn_cli(["migrations", "apply"], project, env, hook=True)
    holder.communicate(timeout=60)
    assert holder.returncode == -9
    return holder.pid


def test_the_lease_of_a_killed_holder_on_another_host_expires_then_an_apply_proceeds(
    template: Path, tmp_path: Path
) -> None:
    project = s.copy_project(template, tmp_path / "p")
    pid = _kill_holder_elsewhere(project, tmp_path, ttl="8")
    lease = StoreLock(_store(project), "observer").holder()
    assert lease is not None and lease.host == "build-agent-7"  # a pid on another host cannot be checked
    refused = s.run_cli(["migrations", "apply"], project)
    assert refused.returncode == 1, s.output(refused)
    match = LOCKED.search(refused.stderr)
    assert match and match["host"] == "build-agent-7" and match["pid"] == str(pid), refused.stderr
    assert "lease expires" in refused.stderr and "metaxy migrations unlock" in refused.stderr
    time.sleep(max(0.0, (lease.expires_at - datetime.now(UTC)).total_seconds() + 0.2))
    after = s.run_cli(["migrations", "apply"], project)
    assert after.returncode == 0, s.output(after)
    _assert_applied_once(project)


def test_unlock_spares_a_fresh_lease_and_force_releases_a_lease_left_by_a_dead_run(
    template: Path, tmp_path: Path
) -> None:
    project = s.copy_project(template, tmp_path / "p")
    pid = _kill_holder_elsewhere(project, tmp_path, ttl=None)  # default TTL 10 min, heartbeat every 150 s
    refused = s.run_cli(["migrations", "apply"], project)
    assert refused.returncode == 1 and LOCKED.search(refused.stderr), s.output(refused)
    # its heartbeat is seconds old: from here a dead holder on another host looks exactly like a live one
    spared = s.run_cli(["migrations", "unlock"], project)
    assert spared.returncode == 1, s.output(spared)
    assert spared.stderr.count("FAILED:") == 1 and "Traceback" not in spared.stderr
    assert "held by run" in spared.stderr and f"(build-agent-7, pid {pid})" in spared.stderr
    assert "whose last heartbeat was" in spared.stderr and "unlock --force" in spared.stderr
    unlock = s.run_cli(["migrations", "unlock", "--force"], project)
    assert unlock.returncode == 0 and "released the lock held by run" in unlock.stdout, s.output(unlock)
    assert "build-agent-7" in unlock.stdout
    again = s.run_cli(["migrations", "unlock"], project)
    assert again.returncode == 0 and "not locked" in again.stdout
    after = s.run_cli(["migrations", "apply"], project)
    assert after.returncode == 0, s.output(after)
    _assert_applied_once(project)


def test_concurrent_write_metadata_from_four_processes_loses_no_rows(template: Path, tmp_path: Path) -> None:
    project = s.copy_project(template, tmp_path / "p")
    workers, batches, rows = 4, 8, 50
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(s.HERE / "writer.py"),
                str(project / "store"),
                str(w),
                str(batches),
                str(rows),
            ],
            env=s.clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, outs
    from metaxy_core import FeatureSpec, FieldSpec

    from .fixture_features import RAW, build_graph

    graph = build_graph("1")
    graph.add(
        FeatureSpec(
            key="video/extra", id_columns=["sample_uid"], fields=[FieldSpec(key="blob", code_version="1")]
        )
    )
    store = _store(project)
    expected = workers * batches * rows
    for key, before in ((RAW, s.N_ROWS), ("video/extra", 0)):
        history = store.read_metadata(key, include_history=True, graph=graph).collect()
        latest = store.read_metadata(key, graph=graph).collect()
        written = history.filter(pl.col("sample_uid").str.starts_with("w"))
        assert written.height == expected and written["sample_uid"].n_unique() == expected, key
        assert latest.height == before + expected, key


def test_two_machines_one_holder_a_holder_taken_over_cannot_write_unlock_spares_a_live_one(
    template: Path, tmp_path: Path
) -> None:
    """Two machines with the same hostname and pid namespace (different boot ids): exactly one holds the
    lock; ``unlock`` refuses the live holder; once the holder stalls (SIGSTOP: its heartbeat stops too) for
    longer than its lease, the other machine takes over; the stalled holder, resumed, is refused at its next
    write and stops with one clear error; the migration is applied exactly once."""
    project = s.copy_project(template, tmp_path / "p")
    name = socket.gethostname()
    machine_a, machine_b = f"{name}/boot-a/4026531836", f"{name}/boot-b/4026531836"
    log = tmp_path / "a.log"
    env = {"METAXY_LOCK_TTL_SECONDS": "6", "REL_SLEEP_S": "0"}
    holder = s.spawn_cli(
        ["migrations", "apply"],
        project,
        {
            **env,
            "REL_WAIT_FOR": str(tmp_path / "go"),  # its first step stalls until the test says go
            "METAXY_TEST_HOOK": json.dumps({"log": str(log), "host_id": machine_a}),
        },
        hook=True,
    )
    deadline = time.monotonic() + 60
    while '"event": "acquire"' not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and holder.poll() is None
        time.sleep(0.05)
    on_b = {**env, "METAXY_TEST_HOOK": json.dumps({"host_id": machine_b})}

    refused = s.spawn_cli(["migrations", "apply"], project, on_b, hook=True)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 1 and err.count("FAILED:") == 1, err
    match = LOCKED.search(err)
    assert match and match["host"] == name and match["pid"] == str(holder.pid), err

    spared = s.spawn_cli(["migrations", "unlock"], project, on_b, hook=True)
    _, err = spared.communicate(timeout=60)
    assert spared.returncode == 1 and f"pid {holder.pid}" in err and "unlock --force" in err, err

    os.kill(holder.pid, signal.SIGSTOP)  # a paused VM: no step progress, no heartbeat
    try:
        time.sleep(6 + 2.5)  # longer than its lease, on the storage's clock (whole seconds on S3)
        taker = s.spawn_cli(["migrations", "apply"], project, on_b, hook=True)
        out, err = taker.communicate(timeout=120)
        assert taker.returncode == 0, out + err
    finally:
        (tmp_path / "go").touch()
        os.kill(holder.pid, signal.SIGCONT)
    out, err = holder.communicate(timeout=60)
    assert holder.returncode == 1, out + err
    assert err.count("FAILED:") == 1 and "Traceback" not in err, err
    assert "lost the migration lock" in err and "took over" in err and "its next write was refused" in err
    commits = [json.loads(line) for line in log.read_text().splitlines()]
    assert not [c for c in commits if c["kind"] == "data"], "the fenced-out holder committed data"
    _assert_applied_once(project)  # one completion, every step recorded once, no sample written twice
