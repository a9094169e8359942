"""`metaxy migrations check` and `validate` on real Delta stores: exit codes, one line per problem, JSON."""

from __future__ import annotations

import json

from cli_testkit import M1, M2, CliProject

from metaxy_core.store.system import SYSTEM_DIR


def delta_versions(cli: CliProject) -> dict[str, int]:
    """Number of commits of every Delta table under the store (a read-only command changes none)."""
    root = cli.root / ".metaxy" / "store"
    return {
        str(log.parent.relative_to(root)): len(list(log.glob("*.json"))) for log in root.rglob("_delta_log")
    }


def test_check_passes_when_every_migration_is_applied_and_unedited(cli: CliProject) -> None:
    cli.seed().chain()
    assert cli.run("migrations", "apply")[0] == 0
    code, out, err = cli.run("migrations", "check")
    assert code == 0, err
    assert "ok: all 2 migration(s) applied" in out
    code, out, _ = cli.run("migrations", "check", "--format", "json")
    assert code == 0 and json.loads(out) == {"ok": True, "migrations": 2, "problems": []}


def test_check_fails_with_one_line_per_pending_migration(cli: CliProject) -> None:
    cli.seed().chain()
    assert cli.run("migrations", "apply", M1)[0] == 0
    before = delta_versions(cli)
    code, out, err = cli.run("migrations", "check")
    assert code == 1
    assert out.splitlines() == [f"{M2}: pending: not applied; run `metaxy migrations apply`"]
    assert "FAILED: migrations check found 1 problem(s)" in err
    assert delta_versions(cli) == before  # nothing written, not even a lock


def test_check_names_an_applied_file_edited_since_and_one_that_is_gone(cli: CliProject) -> None:
    cli.seed().chain()
    assert cli.run("migrations", "apply")[0] == 0
    m2 = cli.migrations_dir / f"{M2}.yaml"
    m2.write_text(m2.read_text() + "# a late edit\n")
    code, out, _ = cli.run("migrations", "check", "--format", "json")
    assert code == 1
    [problem] = json.loads(out)["problems"]
    assert problem["kind"] == "edited" and problem["migration_id"] == M2 and problem["path"] == str(m2)
    assert "revert the edit and put new work in a new migration" in problem["message"]

    m2.unlink()
    code, out, _ = cli.run("migrations", "check")
    assert code == 1
    assert f"{M2}: missing_file: completed in the store's migration log, but no file defines it" in out


def test_check_on_a_broken_chain_fails_with_the_chain_error(cli: CliProject) -> None:
    cli.seed().chain()
    cli.migration("20250102_120000_other_branch", M1, 2)
    code, _, err = cli.run("migrations", "check")
    assert code == 1
    assert "FAILED: the chain forks" in err and "generate --merge" in err


def test_validate_passes_a_sound_chain_and_lists_what_is_pending_without_writing(cli: CliProject) -> None:
    cli.seed().chain()
    before = delta_versions(cli)
    code, out, err = cli.run("migrations", "validate")
    assert code == 0, out + err
    assert f"ok: 2 migration(s) valid; 2 pending: {M1}, {M2}" in out
    assert delta_versions(cli) == before
    assert not (cli.root / ".metaxy" / "store" / SYSTEM_DIR / "lock").exists()


def test_validate_lists_every_bad_file_not_only_the_first(cli: CliProject) -> None:
    cli.seed().chain()
    (cli.migrations_dir / "20250105_000000_bad.yaml").write_text("migration_id: [unclosed\n")
    (cli.migrations_dir / "20250106_000000_worse.yaml").write_text("parent: initial\n")
    code, out, _ = cli.run("migrations", "validate", "--format", "json")
    assert code == 1
    problems = json.loads(out)["problems"]
    assert [p["kind"] for p in problems] == ["load_error", "load_error"]
    assert [p["path"].rsplit("/", 1)[-1] for p in problems] == [
        "20250105_000000_bad.yaml",
        "20250106_000000_worse.yaml",
    ]


def test_validate_reports_a_fork_and_still_checks_the_rest(cli: CliProject) -> None:
    cli.seed(pushed=(1, 2))  # snapshot 3 never pushed, and its file is gone: M2 names an unknown target
    cli.chain()
    v3 = cli.versions[3].graph.snapshot_version
    (cli.root / ".metaxy" / "snapshots" / f"{v3}.json").unlink()
    cli.migration("20250102_120000_other_branch", M1, 1)
    code, out, _ = cli.run("migrations", "validate", emb=2)
    assert code == 1
    lines = out.splitlines()
    assert any("chain: the chain forks" in line and "generate --merge" in line for line in lines)
    assert any(
        line.startswith(f"{M2}: snapshot: to_snapshot_version {v3} is neither pushed to the store")
        and "run `metaxy push`" in line
        for line in lines
    )


def test_validate_accepts_a_snapshot_only_in_the_files_and_refuses_an_edited_one(cli: CliProject) -> None:
    cli.seed(pushed=(1, 2)).chain()  # snapshot 3: only its file, written with the migration
    code, out, err = cli.run("migrations", "validate", emb=2)
    assert code == 0, out + err
    v3 = cli.versions[3].graph.snapshot_version
    path = cli.root / ".metaxy" / "snapshots" / f"{v3}.json"
    path.write_text(path.read_text().replace('"1"', '"9"', 1))  # someone edited a code version in it
    code, out, _ = cli.run("migrations", "validate", emb=2)
    assert code == 1
    [line] = out.splitlines()
    assert line.startswith(f"{M2}: snapshot: to_snapshot_version: {path}")


def test_validate_runs_what_apply_checks_first_for_pending_migrations(cli: CliProject) -> None:
    cli.seed().chain(1)
    op = {"type": "metaxy_core.migrations.ops.DeltaMaintenance", "feature_key": "video/nope"}
    cli.migration(M2, M1, 2, ops=[op])
    code, out, _ = cli.run("migrations", "validate")
    assert code == 1
    [line] = out.splitlines()
    assert line.startswith(f"{M2}: invalid: ") and "video/nope" in line
