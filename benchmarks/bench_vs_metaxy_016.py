"""Reconciliation side by side with Metaxy 0.1.6 (the reference implementation), in one run, on the same data.

What it does:

1. Creates a virtual environment for ``metaxy[delta]==0.1.6`` from the package index (``--venv``, default
   ``/tmp/metaxy016-venv``; reused when it already has that version).
2. Writes two small projects under ``--dir`` (default ``/tmp/metaxy-bench/vs016``) that declare the same
   2-feature graph (``bench/raw`` root with fields ``frames``/``audio`` and a user column ``path``;
   ``bench/embeddings`` with fields ``embedding``/``transcript`` and user columns ``embedding_path``/``dim``),
   each in its own API, both with a local Delta Lake store.
3. Generates the same rows for both (sample ids, paths, the root's content hashes, the downstream user
   columns): 0.1.6 writes them with its ``store.write`` (downstream provenance from its ``resolve_update``),
   ours with ``write_metadata``. Then the graph changes the way reconciliation is meant for (field-level
   lineage refined: ``embedding`` <- ``frames`` only, ``transcript`` <- ``audio`` only; results unchanged) and
   each project gets its reconciliation migration: ours from ``metaxy migrations generate``; 0.1.6's from its
   own detector (``detect_diff_migration``) because its ``migrations generate`` command reloads the stored
   definitions first and then never sees the change.
4. Times ``metaxy migrations apply`` of each project as a subprocess (wall time; peak RSS of that process from
   ``wait4``), ours then 0.1.6, on fresh copies of the generated stores, ``--repeat`` times (best of), and
   checks that both stores end with every sample at the new feature version.

If 0.1.6 fails at ``--rows`` (out of memory, timeout), the failure is reported with its time and peak RSS and
the comparison is repeated at the largest of ``--fallback-sizes`` it can do.

Usage::

    .venv/bin/python benchmarks/bench_vs_metaxy_016.py                 # 5,000,000 rows
    .venv/bin/python benchmarks/bench_vs_metaxy_016.py --rows 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _scale_common as C
import _versus as V
from _versus import apply_ours, prepare_ours, run, their_env

VERSION = "0.1.6"

THEIR_FEATURES = '''
"""The benchmark graph in Metaxy 0.1.6's API (BENCH_REFINED=1: the refined field-level lineage)."""
import os

import metaxy as mx

__metaxy_project__ = "bench"
REFINED = os.environ.get("BENCH_REFINED", "0") == "1"


class Raw(mx.BaseFeature, spec=mx.FeatureSpec(
        key="bench/raw", id_columns=["sample_uid"],
        fields=[mx.FieldSpec(key="frames", code_version="1"), mx.FieldSpec(key="audio", code_version="1")])):
    sample_uid: str
    path: str


def _deps(field):
    return [mx.FieldDep(feature=Raw, fields=[field])] if REFINED else mx.SpecialFieldDep.ALL


class Emb(mx.BaseFeature, spec=mx.FeatureSpec(
        key="bench/embeddings", id_columns=["sample_uid"], deps=[mx.FeatureDep(feature=Raw)],
        fields=[mx.FieldSpec(key="embedding", code_version="1", deps=_deps("frames")),
                mx.FieldSpec(key="transcript", code_version="1", deps=_deps("audio"))])):
    sample_uid: str
    embedding_path: str
    dim: int
'''

THEIR_BUILD = '''
"""Write the benchmark rows with Metaxy 0.1.6 (same values as benchmarks/_scale_common.py)."""
import sys
import time

import polars as pl
import polars_hash  # noqa: F401
import metaxy as mx

import bench_features  # noqa: F401  (registers the features)
from bench_features import Emb, Raw

n, chunk = int(sys.argv[1]), 1_000_000
store = mx.MetaxyConfig.load().get_store()
t0 = time.perf_counter()
with store.open("w"):
    for start in range(0, n, chunk):
        i = pl.int_range(start, min(n, start + chunk), dtype=pl.Int64, eager=True).alias("i").to_frame()
        store.write(Raw, i.select(
            pl.format("s{}", pl.col("i").cast(pl.String).str.zfill(10)).alias("sample_uid"),
            pl.format("s3://videos/raw/{}.mp4", pl.col("i")).alias("path"),
            pl.struct(
                pl.format("f{}", pl.col("i")).nchash.xxh3_64().cast(pl.String).alias("frames"),
                pl.format("a{}", pl.col("i")).nchash.xxh3_64().cast(pl.String).alias("audio"),
            ).alias("metaxy_provenance_by_field"),
        ))
    new = store.resolve_update(Emb).new.to_polars()
    for start in range(0, new.height, chunk):
        part = new.slice(start, chunk)
        num = part["sample_uid"].str.slice(1).cast(pl.Int64)
        store.write(Emb, part.with_columns(
            pl.format("s3://videos/emb/{}.npy", num).alias("embedding_path"),
            (num % 1024 + 256).alias("dim")))
print(f"built {new.height} rows in {time.perf_counter() - t0:.1f} s")
'''

THEIR_GENERATE = '''
"""Metaxy 0.1.6's own detector (its CLI `generate` reloads the stored definitions and sees no change)."""
from pathlib import Path

import metaxy as mx
from metaxy.migrations.detector import detect_diff_migration

import bench_features  # noqa: F401

config = mx.MetaxyConfig.load()
store = config.get_store()
with store.open("w"):
    migration = detect_diff_migration(
        store, project=config.project, ops=[{"type": "metaxy.migrations.ops.DataVersionReconciliation"}],
        migrations_dir=Path(".metaxy/migrations"), name="refine_lineage",
    )
assert migration is not None, "0.1.6 detected no change"
print(migration.migration_id)
'''


# ------------------------------------------------------------------------------ set-up
def ensure_venv(venv: Path) -> Path:
    return V.ensure_venv(venv, VERSION)


def prepare_theirs(base: Path, n: int, venv: Path) -> Path:
    project = base / f"v016_{n}"
    if (project / ".complete").exists():
        return project
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    (project / "bench_features.py").write_text(textwrap.dedent(THEIR_FEATURES))
    (project / "build016.py").write_text(textwrap.dedent(THEIR_BUILD))
    (project / "gen016.py").write_text(textwrap.dedent(THEIR_GENERATE))
    (project / "metaxy.toml").write_text(
        'project = "bench"\nentrypoints = ["bench_features"]\nstore = "dev"\n\n[stores.dev]\n'
        'type = "metaxy.ext.metadata_stores.delta.DeltaMetadataStore"\n\n[stores.dev.config]\n'
        f'root_path = "{project / "store"}"\n'
    )
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "metaxy")
    print(f"  0.1.6: writing {n:,} rows ...", flush=True)
    print(
        "   ", run([python, "build016.py", str(n)], project, their_env(project, venv, False)).strip()[-200:]
    )
    run([cli, "push"], project, their_env(project, venv, False))
    run([python, "gen016.py"], project, their_env(project, venv, True))
    run([cli, "push"], project, their_env(project, venv, True))
    shutil.move(project / "store", project / "pristine")
    (project / ".complete").write_text("ok")
    return project


# ------------------------------------------------------------------------------ timing
def apply_theirs(project: Path, venv: Path, timeout: float) -> dict[str, Any]:
    V.fresh_store(project)
    return V.timed(
        [str(venv / "bin" / "metaxy"), "migrations", "apply"],
        project,
        their_env(project, venv, True),
        timeout,
    )


def _versions(path: str) -> dict[str, Any]:
    import polars as pl

    counts = pl.scan_delta(path).group_by("metaxy_feature_version").len().collect()
    return {"by_version": sorted(counts["len"].to_list())}


def check(ours: Path, theirs: Path, n: int) -> str:
    a = C.run_isolated(_versions, str(ours / "store" / "bench__embeddings"))
    b = C.run_isolated(_versions, str(theirs / "store" / "bench" / "embeddings.delta"))
    ok = a.get("by_version") == [n, n] and b.get("by_version") == [n, n]
    return "ok" if ok else f"unexpected rows per version: ours {a}, 0.1.6 {b}"


# ------------------------------------------------------------------------------ main
def compare(base: Path, n: int, venv: Path, repeat: int, timeout: float) -> tuple[list[list[Any]], bool]:
    theirs_project = prepare_theirs(base, n, venv)
    ours_project = prepare_ours(base, n)
    best_ours: dict[str, Any] | None = None
    best_theirs: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    for _ in range(repeat):
        ours = apply_ours(ours_project, timeout)
        if ours["exit"] != 0:
            raise SystemExit(f"our apply failed:\n{ours['output']}")
        best_ours = ours if best_ours is None or ours["seconds"] < best_ours["seconds"] else best_ours
        theirs = apply_theirs(theirs_project, venv, timeout)
        if theirs["exit"] != 0 or "Migration completed" not in theirs["output"]:
            failure = theirs
            break
        best_theirs = (
            theirs if best_theirs is None or theirs["seconds"] < best_theirs["seconds"] else best_theirs
        )
    assert best_ours is not None
    rows = [
        [n, "this project", best_ours["seconds"], n / best_ours["seconds"], best_ours["peak_rss_mib"], ""]
    ]
    if failure is not None:
        reason = "timed out" if failure["timed_out"] else f"exit code {failure['exit']}"
        tail = " ".join(failure["output"].strip().splitlines()[-2:])[-160:]
        rows.append(
            [n, f"metaxy {VERSION}: FAILED ({reason})", failure["seconds"], "", failure["peak_rss_mib"], tail]
        )
        return rows, False
    assert best_theirs is not None
    duration = re.search(r"Duration: ([0-9.]+)s", best_theirs["output"])
    rows.append(
        [
            n,
            f"metaxy {VERSION}",
            best_theirs["seconds"],
            n / best_theirs["seconds"],
            best_theirs["peak_rss_mib"],
            f"its own 'Duration': {duration.group(1) if duration else '?'} s",
        ]
    )
    rows[0][-1] = (
        f"{best_theirs['seconds'] / best_ours['seconds']:.2f}x faster, "
        f"{best_theirs['peak_rss_mib'] / best_ours['peak_rss_mib']:.1f}x less memory; check: "
        + check(ours_project, theirs_project, n)
    )
    return rows, True


def _machine() -> dict[str, Any]:
    return {"machine": C.machine()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--fallback-sizes", default="2500000,1000000", help="sizes to try if 0.1.6 fails")
    parser.add_argument("--repeat", type=int, default=1, help="applies per system (best of), on fresh copies")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds before an apply counts as failed"
    )
    parser.add_argument("--dir", default=str(C.ROOT / "vs016"))
    parser.add_argument("--venv", default="/tmp/metaxy016-venv")
    args = parser.parse_args()
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    print(f"machine: {C.run_isolated(_machine)['machine']}", flush=True)
    venv = ensure_venv(Path(args.venv))
    V.ensure_our_venv()
    rows: list[list[Any]] = []
    for n in [args.rows, *[int(s) for s in args.fallback_sizes.split(",") if s and int(s) < args.rows]]:
        got, ok = compare(base, n, venv, args.repeat, args.timeout)
        rows += got
        if ok:
            break
    print()
    print(
        C.fmt_table(
            f"Reconciliation: `metaxy migrations apply`, this project vs Metaxy {VERSION} "
            f"(same data, best of {args.repeat}; wall time and peak RSS of the CLI process)",
            ["rows", "system", "seconds", "rows/s", "peak RSS MiB", "ratio / note"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
