"""Reconciliation and ``resolve_update`` side by side with Metaxy 0.1.11, in one run, on the same data.

What it does:

1. Creates a virtual environment for ``metaxy[delta]==0.1.11`` from the package index (``--venv``, default
   ``/tmp/metaxy011-venv``; reused when it already has that version).
2. Writes the benchmark's 2-feature graph for each system (see :mod:`_scale_common`; 0.1.11 declares it with
   the 0.1.6 project's feature module, whose API it kept) and the same rows with each system's own API, each
   on a local Delta Lake store. The lineage change is the same: lineage refined, results unchanged.
3. Reconciliation, as whole processes (wall time; peak RSS from ``wait4``), on fresh copies of the stores,
   ours then theirs, ``--repeat`` times (best of): ours is ``metaxy migrations apply`` of the generated
   ``DataVersionReconciliation``; 0.1.11's is ``metaxy metadata rebase bench/embeddings --from <old version>``
   (its CLI reads the old version's rows, recomputes provenance from the upstream and writes them with
   ``preserve_feature_version``).
4. Checks both results: each store holds every sample at the old and at the new feature version, the user
   columns of every sample are unchanged, and the system's own ``resolve_update`` then reports nothing to do.
5. ``resolve_update`` of the downstream feature under the new graph, all three frames collected (ours:
   ``added``/``changed``/``removed``; 0.1.11: ``new``/``stale``/``orphaned``), as whole processes, best of
   ``--repeat``, with the time of the call itself; both must report every sample changed, none added/removed.
   ``--after-migration``: the same call on the reconciled stores (each system's own migration first), the
   call users make right after a migration; both must report nothing to do.

Usage::

    .venv/bin/python benchmarks/bench_vs_metaxy_011.py --rows 1000000 --repeat 2
    .venv/bin/python benchmarks/bench_vs_metaxy_011.py --rows 5000000
    .venv/bin/python benchmarks/bench_vs_metaxy_011.py --rows 1000000 --only resolve --after-migration
    .venv/bin/python benchmarks/bench_vs_metaxy_011.py --only resolve --malloc-conf dirty_decay_ms:0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _scale_common as C
import _versus as V
from bench_vs_metaxy_016 import THEIR_BUILD, THEIR_FEATURES

VERSION = "0.1.11"

THEIR_VERSION = '''
"""The downstream feature's version under the current graph (BENCH_REFINED picks old or refined)."""
import metaxy as mx

import bench_features  # noqa: F401

print("VERSION=" + mx.current_graph().get_feature_version("bench/embeddings"))
'''

THEIR_RESOLVE = '''
"""0.1.11's resolve_update of bench/embeddings, all three frames collected; counts and the call's time."""
import json
import time

import metaxy as mx

import bench_features  # noqa: F401
from bench_features import Emb

store = mx.MetaxyConfig.load().get_store()
with store.open("r"):
    t0 = time.perf_counter()
    inc = store.resolve_update(Emb).to_polars()
    seconds = time.perf_counter() - t0
print(json.dumps({"call_s": seconds, "added": inc.new.height, "changed": inc.stale.height,
                  "removed": inc.orphaned.height}))
'''

THEIR_CHECK = '''
"""After 0.1.11's rebase: rows per version, user columns kept, and nothing left to do for resolve_update."""
import json
import sys

import polars as pl
import metaxy as mx

import bench_features  # noqa: F401
from bench_features import Emb

old, new = sys.argv[1], sys.argv[2]
store = mx.MetaxyConfig.load().get_store()
rows = pl.scan_delta("store/bench/embeddings.delta")  # the nested layout of 0.1.11's Delta store
by_version = rows.group_by("metaxy_feature_version").len().collect()
user = ["sample_uid", "embedding_path", "dim"]
kept = (rows.filter(pl.col("metaxy_feature_version") == new).select(user)
        .join(rows.filter(pl.col("metaxy_feature_version") == old).select(user), on=user, how="inner")
        .select(pl.len()).collect().item())
with store.open("r"):
    inc = store.resolve_update(Emb).to_polars()
print(json.dumps({"by_version": sorted(by_version["len"].to_list()), "user_columns_kept": kept,
                  "todo": inc.new.height + inc.stale.height}))
'''

OUR_RESOLVE = '''
"""Our resolve_update of bench/embeddings under the new graph, all three frames collected."""
import json
import sys
import time

sys.path.insert(0, sys.argv[2])
import _scale_common as C
from metaxy_core import DeltaMetadataStore

_, new = C.graphs()
store = DeltaMetadataStore(sys.argv[1], project="bench")
t0 = time.perf_counter()
inc = store.resolve_update(C.EMB, graph=new).collect()
seconds = time.perf_counter() - t0
print(json.dumps({"call_s": seconds, "added": inc.added.height, "changed": inc.changed.height,
                  "removed": inc.removed.height}))
'''


# ------------------------------------------------------------------------------ set-up
def prepare_theirs(base: Path, n: int, venv: Path) -> Path:
    """0.1.11's project at ``n`` rows (old lineage), its pristine store and the old feature version."""
    project = base / f"v011_{n}"
    if (project / ".complete").exists():
        return project
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    for name, text in {
        "bench_features.py": THEIR_FEATURES,
        "build.py": THEIR_BUILD,
        "version.py": THEIR_VERSION,
        "resolve.py": THEIR_RESOLVE,
        "check.py": THEIR_CHECK,
    }.items():
        (project / name).write_text(textwrap.dedent(text))
    (project / "metaxy.toml").write_text(
        'project = "bench"\nentrypoints = ["bench_features"]\nstore = "dev"\n\n[stores.dev]\n'
        'type = "metaxy.ext.polars.handlers.delta.DeltaMetadataStore"\n\n[stores.dev.config]\n'
        f'root_path = "{project / "store"}"\n'
    )
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "metaxy")
    print(f"  {VERSION}: writing {n:,} rows ...", flush=True)
    print(
        "   ", V.run([python, "build.py", str(n)], project, V.their_env(project, venv, False)).strip()[-200:]
    )
    V.run([cli, "push"], project, V.their_env(project, venv, False))
    versions = {
        refined: _marked(V.run([python, "version.py"], project, V.their_env(project, venv, refined)))
        for refined in (False, True)
    }
    V.run([cli, "push"], project, V.their_env(project, venv, True))
    (project / "versions.json").write_text(json.dumps({"old": versions[False], "new": versions[True]}))
    shutil.move(project / "store", project / "pristine")
    (project / ".complete").write_text("ok")
    return project


def _marked(output: str) -> str:
    """The value of the ``VERSION=`` line (0.1.11 prints warnings around it)."""
    return next(line for line in output.splitlines() if line.startswith("VERSION=")).split("=", 1)[1]


def their_versions(project: Path) -> dict[str, str]:
    return json.loads((project / "versions.json").read_text())


# ------------------------------------------------------------------------------ measurements
def rebase_theirs(project: Path, venv: Path, timeout: float) -> dict[str, Any]:
    V.fresh_store(project)
    cmd = [
        str(venv / "bin" / "metaxy"),
        "metadata",
        "rebase",
        C.EMB,
        "--from",
        their_versions(project)["old"],
    ]
    return V.timed(cmd, project, V.their_env(project, venv, True), timeout)


def resolve_theirs(project: Path, venv: Path, timeout: float, *, fresh: bool = True) -> dict[str, Any]:
    if fresh:
        V.fresh_store(project)  # the store before reconciliation, as ours reads it
    cmd = [str(venv / "bin" / "python"), "resolve.py"]
    return _with_json(V.timed(cmd, project, V.their_env(project, venv, True), timeout))


def resolve_ours(project: Path, timeout: float, store: str = "pristine") -> dict[str, Any]:
    """Our resolve_update on ``project``'s ``store`` folder (``pristine``, or ``store`` after an apply)."""
    script = project / "resolve_ours.py"
    script.write_text(textwrap.dedent(OUR_RESOLVE))
    cmd = [str(V.OURS_PYTHON), str(script), str(project / store), str(Path(__file__).resolve().parent)]
    return _with_json(V.timed(cmd, project, V.our_env(project, True), timeout))


def _with_json(result: dict[str, Any]) -> dict[str, Any]:
    """The measured process's last output line, parsed (its counts and the call's own time)."""
    if result["exit"] == 0:
        result.update(json.loads(result["output"].strip().splitlines()[-1]))
    return result


def _check_ours(root: str) -> dict[str, Any]:
    import polars as pl

    from metaxy_core import DeltaMetadataStore

    old, new = C.graphs()
    rows = pl.scan_delta(f"{root}/bench__embeddings")
    by_version = rows.group_by("metaxy_feature_version").len().collect()
    user = ["sample_uid", "embedding_path", "dim"]
    at = {
        v: rows.filter(pl.col("metaxy_feature_version") == g.feature_version(C.EMB)).select(user)
        for v, g in (("old", old), ("new", new))
    }
    kept = at["new"].join(at["old"], on=user, how="inner").select(pl.len()).collect().item()
    inc = DeltaMetadataStore(root, project="bench").resolve_update(C.EMB, graph=new).collect()
    return {
        "by_version": sorted(by_version["len"].to_list()),
        "user_columns_kept": kept,
        "todo": inc.added.height + inc.changed.height,
    }


def check(ours: Path, theirs: Path, venv: Path, n: int) -> str:
    """Both reconciled stores: every sample at both versions, user columns kept, nothing left to do."""
    a = C.run_isolated(_check_ours, str(ours / "store"))
    versions = their_versions(theirs)
    out = V.run(
        [str(venv / "bin" / "python"), "check.py", versions["old"], versions["new"]],
        theirs,
        V.their_env(theirs, venv, True),
    )
    b = json.loads(out.strip().splitlines()[-1])
    want = {"by_version": [n, n], "user_columns_kept": n, "todo": 0}
    bad = [
        f"{who}: {got}" for who, got in (("ours", a), (VERSION, b)) if {k: got.get(k) for k in want} != want
    ]
    return "ok" if not bad else "UNEXPECTED " + "; ".join(bad)


def _best(runs: list[dict[str, Any]], key: str = "seconds") -> dict[str, Any]:
    ok = [r for r in runs if r["exit"] == 0]
    return min(ok, key=lambda r: r[key]) if ok else runs[-1]


# ------------------------------------------------------------------------------ main
def _machine() -> dict[str, Any]:
    return {"machine": C.machine()}


def _migrated(ours: Path, theirs: Path, venv: Path, timeout: float) -> None:
    """Both stores reconciled (fresh copies), for ``--after-migration`` runs of the resolve comparison."""
    for who, run in (("ours", V.apply_ours(ours, timeout)), (VERSION, rebase_theirs(theirs, venv, timeout))):
        if run["exit"] != 0:
            raise SystemExit(f"{who}: reconciliation failed ({run['exit']}): {run['output'][-400:]}")


def compare(
    base: Path,
    n: int,
    venv: Path,
    repeat: int,
    timeout: float,
    only: str = "all",
    after_migration: bool = False,
) -> list[list[Any]]:
    theirs_project = prepare_theirs(base, n, venv)
    ours_project = V.prepare_ours(base, n)
    recon: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": []}
    resolve: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": []}
    note = ""
    for _ in range(repeat):  # interleaved: load changes hit both alike
        if only in ("all", "reconciliation"):
            recon["ours"].append(V.apply_ours(ours_project, timeout))
            recon["theirs"].append(rebase_theirs(theirs_project, venv, timeout))
            note = note or check(ours_project, theirs_project, venv, n)  # the stores as reconciled
        if only in ("all", "resolve"):
            if after_migration and only == "resolve":
                _migrated(ours_project, theirs_project, venv, timeout)
            store = "store" if after_migration else "pristine"
            resolve["ours"].append(resolve_ours(ours_project, timeout, store))
            resolve["theirs"].append(resolve_theirs(theirs_project, venv, timeout, fresh=not after_migration))
    rows: list[list[Any]] = []
    label = "resolve_update after migration, 3 frames" if after_migration else "resolve_update, 3 frames"
    for what, runs in (("reconciliation", recon), (label, resolve)):
        if not runs["ours"]:
            continue
        best = {who: _best(r) for who, r in runs.items()}
        for who, label in (("ours", "this project"), ("theirs", f"metaxy {VERSION}")):
            b = best[who]
            if b["exit"] != 0:
                tail = " ".join(b["output"].strip().splitlines()[-2:])[-160:]
                rows.append(
                    [n, what, f"{label}: FAILED ({b['exit']})", b["seconds"], "", b["peak_rss_mib"], tail]
                )
                continue
            ratio = ""
            if who == "ours" and best["theirs"]["exit"] == 0:
                t, o = best["theirs"], best["ours"]
                ratio = (
                    f"{t['seconds'] / o['seconds']:.2f}x faster, "
                    f"{t['peak_rss_mib'] / o['peak_rss_mib']:.1f}x less memory"
                )
                if what == "reconciliation":
                    ratio += f"; check: {note}"
                else:
                    # 0.1.11 compares with the rows at the new feature version only: every sample is "new"
                    # to it, "changed" to us (stored under another version); the totals must agree.
                    same = (o["added"] + o["changed"], o["removed"]) == (
                        t["added"] + t["changed"],
                        t["removed"],
                    )
                    counts = "equal" if same else "DIFFER"
                    ratio += f"; call alone {t['call_s'] / o['call_s']:.2f}x; counts {counts}"
            detail = (
                f"call {b['call_s']:.2f} s ({b['added']}/{b['changed']}/{b['removed']})"
                if "call_s" in b
                else ""
            )
            rows.append([n, what, label, b["seconds"], b["peak_rss_mib"], detail, ratio])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="1000000", help="comma-separated row counts")
    parser.add_argument("--repeat", type=int, default=2, help="runs per system (best of), on fresh copies")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run counts as failed")
    parser.add_argument("--dir", default=str(C.ROOT / "vs011"))
    parser.add_argument("--venv", default="/tmp/metaxy011-venv")
    parser.add_argument(
        "--only",
        choices=["all", "reconciliation", "resolve"],
        default="all",
        help="run one of the two comparisons (resolve: no reconciliation, so no check of reconciled stores)",
    )
    parser.add_argument(
        "--after-migration",
        action="store_true",
        help="resolve_update on the reconciled stores (each system's own migration first) instead of the "
        "pristine ones: the call users make right after a migration",
    )
    parser.add_argument(
        "--malloc-conf",
        default=None,
        help="a diagnosis, not a setting users get: polars' jemalloc options (``_RJEM_MALLOC_CONF``) for "
        "both systems' measured processes, e.g. 'dirty_decay_ms:0' (freed pages returned at once, so the "
        "peak is the memory each process holds, not what its allocator keeps)",
    )
    args = parser.parse_args()
    if args.malloc_conf:
        os.environ["_RJEM_MALLOC_CONF"] = args.malloc_conf  # inherited by both systems' environments
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    print(f"machine: {C.run_isolated(_machine)['machine']}", flush=True)
    venv = V.ensure_venv(Path(args.venv), VERSION)
    V.ensure_our_venv()
    rows: list[list[Any]] = []
    for n in [int(s) for s in args.rows.split(",") if s]:
        rows += compare(base, n, venv, args.repeat, args.timeout, args.only, args.after_migration)
    print()
    print(
        C.fmt_table(
            f"This project vs Metaxy {VERSION} (same data, best of {args.repeat}; whole processes: wall time "
            f"and peak RSS; load average {V.load_average()})"
            + (f"; _RJEM_MALLOC_CONF={args.malloc_conf}" if args.malloc_conf else ""),
            ["rows", "operation", "system", "seconds", "peak RSS MiB", "detail", "ratio / check"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
