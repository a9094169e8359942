"""The command line as a process: --version, no silent project, init, the rollback prompt on a real
pseudo-terminal and without one, progress on stderr, untruncated piped tables, NO_COLOR."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from cli_testkit import CODE_ROOT, M1, M2, CliProject, child_env

from metaxy_core import MetaxyConfig

#: SGR sequences that set a colour (foreground/background, 8/16/256/true colour); bold etc. are not colour
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


def metaxy(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metaxy_core.cli.app", *args],
        cwd=cwd,
        env=child_env(3, env),
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def on_terminal(cwd: Path, *args: str, answer: str | None = None, env: dict[str, str] | None = None):
    """Run ``metaxy ARGS`` with stdin, stdout and stderr on a pseudo-terminal; type ``answer`` at the
    prompt. Returns (exit code, everything the terminal showed)."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaxy_core.cli.app", *args],
        cwd=cwd,
        env=child_env(3, {"TERM": "xterm-256color", "COLUMNS": "200", **(env or {})}),
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    shown, answered, deadline = b"", answer is None, time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        if not answered and b"[y/N]" in shown:
            os.write(main, (answer or "").encode() + b"\n")
            answered = True
        if proc.poll() is not None and not ready:
            break
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave a child waiting on a terminal nobody reads
        raise
    finally:
        os.close(main)
    return code, shown.decode(errors="replace")


# ------------------------------------------------------------------------------------------ --version
def test_version_prints_the_package_version_as_text_and_json(cli: CliProject) -> None:
    code, out, _ = cli.run("--version")
    assert code == 0 and out.startswith(f"metaxy-dagster {metadata.version('metaxy-dagster')} (python ")
    code, out, _ = cli.run("--version", "--format", "json")
    info = json.loads(out)
    assert code == 0 and info["metaxy_dagster"] == metadata.version("metaxy-dagster")
    assert info["deltalake"] == metadata.version("deltalake")


def test_no_command_is_a_usage_error(cli: CliProject) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.run()
    assert exit_info.value.code == 2


# ------------------------------------------------------------------------------------------ no project
@pytest.mark.parametrize("verb", [["push"], ["migrations", "status"], ["migrations", "apply"], ["graph"]])
def test_project_verbs_outside_a_project_fail_saying_where_they_looked(
    tmp_path: Path, verb: list[str]
) -> None:
    empty = tmp_path / "not_a_project"
    empty.mkdir()
    result = metaxy(empty, *verb)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "FAILED: no metaxy project here: no metaxy.toml, and no pyproject.toml with a [tool.metaxy] table, "
        f"in {empty} or any folder above it; run `metaxy init`"
    )
    assert list(empty.iterdir()) == []  # no ./.metaxy/store pushed into


def test_a_deployment_configured_by_environment_alone_still_runs(tmp_path: Path) -> None:
    result = metaxy(tmp_path, "migrations", "status", env={"METAXY_STORE_ROOT": str(tmp_path / "store")})
    assert result.returncode == 0, result.stderr
    assert "no migrations in" in result.stdout


def test_init_writes_a_commented_config_that_loads_and_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "My Pipeline"
    folder.mkdir()
    result = metaxy(folder, "init")
    assert result.returncode == 0, result.stderr
    written = folder / "metaxy.toml"
    text = written.read_text()
    assert text.count("\n# ") >= 8  # every setting says why it is there
    assert tomllib.loads(text)["project"] == "my_pipeline"
    config = MetaxyConfig.load(written)
    assert config.project == "my_pipeline" and config.store_root == str(folder / ".metaxy" / "store")
    assert metaxy(folder, "migrations", "status").returncode == 0

    again = metaxy(folder, "init", "--project", "other")
    assert again.returncode == 1 and "already configures this folder" in again.stderr
    assert written.read_text() == text


def test_push_after_init_refuses_an_empty_graph_until_entrypoints_are_listed(tmp_path: Path) -> None:
    assert metaxy(tmp_path, "init").returncode == 0
    result = metaxy(tmp_path, "push")
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"FAILED: {tmp_path / 'metaxy.toml'}: no features are declared (entrypoints: [])"
    )
    assert "list the modules that declare your features in `entrypoints`" in result.stderr
    assert not (tmp_path / ".metaxy" / "store").exists()


def test_init_refuses_a_folder_configured_in_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.metaxy]\nproject = "p"\n')
    result = metaxy(tmp_path, "init")
    assert result.returncode == 1 and "pyproject.toml ([tool.metaxy]) already configures" in result.stderr
    assert not (tmp_path / "metaxy.toml").exists()


def test_init_refuses_a_bad_project_name_before_writing(tmp_path: Path) -> None:
    result = metaxy(tmp_path, "init", "--project", "no spaces")
    assert result.returncode == 1 and result.stderr.startswith("FAILED: --project: ")
    assert not (tmp_path / "metaxy.toml").exists()


# ------------------------------------------------------------------------------------- rollback prompt
def test_rollback_of_several_without_a_terminal_refuses_unless_yes(cli: CliProject) -> None:
    cli.seed().chain()
    assert cli.run("migrations", "apply")[0] == 0
    refused = cli.spawn("migrations", "rollback", M1)
    assert refused.returncode == 4
    assert f"rolling back 2 migrations ({M2}, {M1}) needs confirmation" in refused.stderr
    assert "pass --yes" in refused.stderr
    assert cli.state(M1) == cli.state(M2) == "completed"

    done = cli.spawn("migrations", "rollback", M1, "--yes")
    assert done.returncode == 0, done.stderr
    assert cli.state(M1) == cli.state(M2) == "not_started"


def test_rollback_of_one_migration_needs_no_confirmation(cli: CliProject) -> None:
    cli.seed().chain()
    assert cli.run("migrations", "apply")[0] == 0
    result = cli.spawn("migrations", "rollback")
    assert result.returncode == 0, result.stderr
    assert cli.state(M2) == "not_started" and cli.state(M1) == "completed"


@pytest.mark.parametrize(("answer", "code", "state"), [("n", 4, "completed"), ("y", 0, "not_started")])
def test_rollback_of_several_asks_on_a_terminal(cli: CliProject, answer: str, code: int, state: str) -> None:
    cli.seed().chain()
    assert cli.run("migrations", "apply")[0] == 0
    exit_code, shown = on_terminal(cli.root, "migrations", "rollback", M1, answer=answer)
    assert f"This rolls back 2 migrations, newest first: {M2}, {M1}" in shown
    assert "Roll them back? [y/N]" in shown
    assert exit_code == code, shown
    assert cli.state(M1) == cli.state(M2) == state
    if answer == "n":
        assert "not confirmed; nothing changed" in shown


# ------------------------------------------------------------------------------------------ progress
def test_apply_reports_progress_on_stderr_and_keeps_stdout_json_when_piped(cli: CliProject) -> None:
    cli.seed(samples=50).chain(1)
    result = cli.spawn("migrations", "apply", "--format", "json", emb=2)
    assert result.returncode == 0, result.stderr
    assert [r["migration_id"] for r in json.loads(result.stdout)] == [M1]  # stdout: the result only
    [line] = [x for x in result.stderr.splitlines() if "reconcile on video/embeddings" in x]
    assert re.fullmatch(
        rf"{M1}: reconcile on video/embeddings: 50 / 50 rows \(100%\), [0-9.]+k? rows/s, done in \d+s", line
    )


def test_apply_on_a_terminal_shows_the_finished_step_line(cli: CliProject) -> None:
    cli.seed(samples=30).chain(1)
    code, shown = on_terminal(cli.root, "migrations", "apply", env={"EMB_VERSION": "2"})
    assert code == 0, shown
    assert "reconcile on video/embeddings: 30 / 30 rows (100%)" in shown


def test_store_maintain_reports_tables_done(cli: CliProject) -> None:
    cli.seed()
    result = cli.spawn("store", "maintain")
    assert result.returncode == 0, result.stderr
    assert re.search(r"store maintenance: optimize: (\d+) / \1 tables \(100%\)", result.stderr)


# ----------------------------------------------------------------------------------------- pipes, colour
LONG = "20250101_000000_" + "carry_the_embeddings_of_every_video_to_the_new_encoder_" * 2 + "v2"


def test_piped_tables_keep_full_migration_ids_and_feature_keys(cli: CliProject) -> None:
    cli.seed()
    cli.migration(LONG, "initial", 1)
    assert len(LONG) > 120
    for columns in (None, "40"):
        env = {"COLUMNS": columns} if columns else {}
        for verb in (["migrations", "list"], ["migrations", "status"]):
            result = cli.spawn(*verb, env=env)
            assert result.returncode == 0, result.stderr
            assert LONG in result.stdout, result.stdout  # on one line, not cut with "…" or folded
    prefix = "a_namespace_long_enough_to_push_every_feature_key_past_the_eighty_columns_of_a_pipe"
    result = cli.spawn("graph", env={"PREFIX": prefix})
    assert result.returncode == 0, result.stderr
    assert f"{prefix}/embeddings" in result.stdout and f"{prefix}/raw" in result.stdout


def test_no_color_removes_colour_from_terminal_output(cli: CliProject) -> None:
    cli.seed().chain()
    assert cli.run("migrations", "apply", M1)[0] == 0
    _, coloured = on_terminal(cli.root, "migrations", "status")
    assert COLOUR.search(coloured), coloured  # a terminal gets colours (completed in green)...
    _, plain = on_terminal(cli.root, "migrations", "status", env={"NO_COLOR": "1"})
    assert M1 in plain and not COLOUR.search(plain)  # ...unless NO_COLOR is set


def test_child_processes_run_this_checkout() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import metaxy_core; print(metaxy_core.__file__)"],
        env=child_env(1),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith(CODE_ROOT)
