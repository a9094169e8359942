"""Start-up: loading the package, the CLI and the Dagster plugin runs no full garbage-collector pass, and
leaves the collector as the program had it.

Each case runs in a fresh interpreter (the modules must not be loaded yet); a ``gc.callbacks`` hook counts the
collections that start while the modules load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_PROBE = textwrap.dedent(
    """
    import gc, json, sys
    if sys.argv[2] == "disabled":
        gc.disable()
    passes = []
    gc.callbacks.append(lambda phase, info: phase == "start" and passes.append(info["generation"]))
    __import__(sys.argv[1])
    gc.callbacks.clear()
    print(json.dumps({"passes": passes, "enabled": gc.isenabled()}))
    """
)


def _probe(module: str, collector: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, collector], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["metaxy_core", "metaxy_core.cli.app", "metaxy_dagster"])
def test_loading_runs_no_collection_and_restores_the_collector(module: str) -> None:
    # Without the pause, each of these imports runs full (generation 2) passes over every object loaded so
    # far (2 for the CLI: ~50 ms of its start-up) and dozens of younger ones; a few young passes remain while
    # the standard-library modules the pause itself needs load.
    got = _probe(module, "enabled")
    assert got["enabled"] is True
    assert 2 not in got["passes"]  # type: ignore[operator]


def test_loading_keeps_a_collector_the_program_disabled_disabled() -> None:
    assert _probe("metaxy_core.cli.app", "disabled") == {"passes": [], "enabled": False}


def test_a_collection_resumes_after_loading() -> None:
    # the pause ends with the import: an explicit pass afterwards runs (and the collector is on)
    probe = _PROBE.replace("print(", "gc.collect()\nprint(").replace("gc.callbacks.clear()\n", "")
    out = subprocess.run(
        [sys.executable, "-c", probe, "metaxy_core", "enabled"], capture_output=True, text=True, check=True
    ).stdout
    assert 2 in json.loads(out.strip().splitlines()[-1])["passes"]
