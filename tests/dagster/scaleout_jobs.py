"""The scale-out project's apply job (for ``build_reconstructable_job``) and fault hooks for its steps.

Every step process of a multiprocess run imports this module again to rebuild the job, so the hooks below
are installed in each of them, from the ``SCALEOUT_HOOK`` environment variable (JSON), by patching public
module attributes (the bulk writer ``metaxy_core.store.bulk.append_frames``); the engine has no test paths:

* ``kill_marker``: the first unit process to reach a bulk commit creates this file and SIGKILLs itself
  before the commit (one process in the whole run, whoever gets there first);
* ``cli_marker`` + ``cli_config``: the first unit process to reach a bulk commit runs
  ``metaxy migrations apply`` on the same project (another process, as a user would during the run) and
  writes its exit code and output into the marker file as JSON, then carries on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

HOOK: dict[str, Any] = json.loads(os.environ.get("SCALEOUT_HOOK", "{}"))


def _first(marker: str) -> bool:
    """Whether this process is the first to claim ``marker`` (atomic across processes)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        return False


def _install() -> None:
    from metaxy_core.store import bulk

    real = bulk.append_frames

    def append_frames(*args: Any, **kwargs: Any) -> Any:
        if HOOK.get("kill_marker") and _first(HOOK["kill_marker"]):
            os.kill(os.getpid(), signal.SIGKILL)
        if HOOK.get("cli_marker") and _first(HOOK["cli_marker"]):
            cli = [sys.executable, "-m", "metaxy_core.cli.app", "--config", HOOK["cli_config"]]
            done = subprocess.run([*cli, "migrations", "apply"], capture_output=True, text=True, timeout=300)
            Path(HOOK["cli_marker"]).write_text(
                json.dumps({"code": done.returncode, "out": done.stdout, "err": done.stderr})
            )
        return real(*args, **kwargs)

    bulk.append_frames = append_frames


if HOOK:
    _install()


def apply_job(config_path: str):
    """Factory for ``build_reconstructable_job``: the apply job with its reconciliations fanned out."""
    from metaxy_dagster import APPLY_JOB_NAME, build_migration_definitions

    defs = build_migration_definitions(config_path=config_path, fan_out=True)
    return defs.resolve_job_def(APPLY_JOB_NAME)
