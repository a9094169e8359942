"""The ``metaxy`` console script exits without the interpreter's teardown (``cli.app.entry``), and still does
everything a normal exit does that has an effect: exit codes, the whole output on a pipe, waiting for the
threads a project started, its ``atexit`` handlers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from metaxy_core.testing.project import ProjectDir

# A project whose feature module starts a (non-daemon) thread that finishes after the command, and registers
# an atexit handler: both must leave their file behind.
FEATURES = """
import atexit
import os
import threading
import time
from pathlib import Path

from metaxy_core import Feature, FeatureSpec, FieldSpec

HERE = Path(os.environ["EXIT_TEST_DIR"])


def _late() -> None:
    time.sleep(0.5)
    (HERE / "thread.done").write_text("ok")


threading.Thread(target=_late).start()
atexit.register(lambda: (HERE / "atexit.done").write_text("ok"))

for i in range(300):  # a long --format json output: all of it must reach the pipe
    type(f"F{i}", (Feature,), {}, spec=FeatureSpec(key=f"exit/f{i}", fields=[FieldSpec(key="x")]))
"""


def _console_script(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("metaxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAXY_")}
    env["EXIT_TEST_DIR"] = str(project)
    return subprocess.run(
        [str(script), *args], cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_console_script_keeps_exit_codes_output_threads_and_atexit_handlers(tmp_path: Path) -> None:
    project = ProjectDir(tmp_path / "p", modules={"exit_features": FEATURES}, name="exitdemo")
    ok = _console_script(project.root, "graph", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    features = json.loads(ok.stdout)  # the whole document arrived (a truncated one fails to parse)
    assert len(features) == 300
    assert (project.root / "thread.done").read_text() == "ok"  # waited for the project's thread
    assert (project.root / "atexit.done").read_text() == "ok"  # ran its atexit handler

    failed = _console_script(project.root, "--config", str(tmp_path / "missing.toml"), "graph")
    assert failed.returncode == 1 and failed.stderr.count("FAILED:") == 1
    usage = _console_script(project.root)  # argparse's usage error: SystemExit through the normal path
    assert usage.returncode == 2 and "a command is required" in usage.stderr
