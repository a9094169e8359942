"""Scale benchmark: reconciliation, resolve_update, reads as history grows and Delta maintenance.

Every measurement runs in a fresh *spawned* interpreter (``_scale_common.run_isolated``); its wall time, CPU
time and peak RSS (``ru_maxrss`` of that process) are reported. This script's own process imports nothing
heavy, because Linux carries ``ru_maxrss`` across fork+exec. Data is generated under ``--dir`` (default
``/tmp/metaxy-bench``) and reused by later runs (``--rebuild`` to start over).

Sections (``--sections``, default all):

``recon``
    ``DataVersionReconciliation`` through ``MigrationExecutor`` (lock, progress log, buckets, commits) on the
    2-feature graph of ``_scale_common`` at each ``--sizes``, on a copy of a pristine store, against a bare
    ``DataFrame.write_delta`` of the same output rows (already in memory; default delta-rs options). The
    ``clustered`` layout writes samples in id order (one commit per million); ``shuffled`` spreads every
    commit over all ids, which forces a one-pass spill into buckets (id ranges cut from a sample of the ids).
    Both layouts run at every size (``--first-shuffled-only``: the shuffled one at the first size only).
``resolve``
    ``resolve_update(...).collect()`` at ``--resolve-rows`` against the same scan + hash + join written by
    hand in polars (best of ``--repeat``); then the bounded-memory check at every size: counting
    ``added``/``changed``/``removed`` and sinking ``changed`` to Parquet.
``read``
    ``read_metadata(...).collect()`` of a feature at each ``--sizes`` in both layouts (best of ``--repeat``):
    clustered files let the Delta log prove one row per sample (no selection); shuffled ones need the
    newest-row-per-sample selection (group-by + semi-join on the commit order) over every row.
``history``
    ``read_metadata(...).collect()`` of the current version of a 1M-sample feature after 0..8 reconciliations
    (each adds a full version), against the same query without the Delta log's file statistics.
``s3``
    Reconciliation on a moto S3 server on 127.0.0.1 at each ``--s3-sizes`` (the clustered store uploaded)
    against a bare ``DataFrame.write_delta`` of the same output rows to the same server (see ``_scale_s3``).
``maint``
    A table of 1000 small appends (1000 rows each): file count and read time before and after
    ``optimize`` + ``checkpoint`` + ``vacuum``.

``--baseline DIR`` (sections ``recon`` and ``read``): DIR holds an earlier ``metaxy_core`` (``git archive
<commit> metaxy_core | tar -x -C DIR``). Every measurement then also runs under it, interleaved with ours
(ours, baseline, ours, ...), each on stores built by its own code (the baseline's under ``--dir``/baseline),
and the tables add the ratio ours / baseline: a shared, noisy machine slows both alike.

Usage::

    .venv/bin/python benchmarks/bench_scale.py                          # everything (~30 min)
    .venv/bin/python benchmarks/bench_scale.py --sections recon,read --sizes 5000000 --baseline /tmp/base
    .venv/bin/python benchmarks/bench_scale.py --sections recon --sizes 5000000
    .venv/bin/python benchmarks/bench_scale.py --sections resolve,history,maint
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _scale_common as C


# ------------------------------------------------------------------------------ data
def pristine(base: Path, n: int, layout: str, rebuild: bool, code: str | None = None) -> Path:
    """A store with ``n`` root + ``n`` downstream rows at the old version (built once, then reused); ``code``
    builds it with another ``metaxy_core`` (see ``--baseline``)."""
    root = base / f"pristine_{layout}_{n}"
    marker = root / ".complete"
    if marker.exists() and not rebuild:
        return root
    print(f"  building {layout} store with {n:,} rows in {root} ...", flush=True)
    out = C.run_isolated(_build, str(root), n, layout == "shuffled", timeout=7200, code=code)
    if "error" in out:
        raise SystemExit(f"build failed: {out['error']}")
    marker.write_text(str(out))
    return root


def _build(root: str, n: int, shuffled: bool) -> dict[str, Any]:
    return C.build_store(Path(root), n, shuffled=shuffled)


def _machine() -> dict[str, Any]:
    return {"machine": C.machine()}


def fresh_copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------- measurements
def _reconcile(root: str) -> dict[str, Any]:
    from metaxy_core import DeltaMetadataStore
    from metaxy_core.migrations import MigrationExecutor

    old, new = C.graphs()
    store = DeltaMetadataStore(root, project="bench")
    migration = C.reconcile_migration(old, new)
    t0 = time.perf_counter()
    result = MigrationExecutor(store, graph=new, run_id="bench").apply_migration(migration)
    seconds = time.perf_counter() - t0
    assert result.status == "completed", result
    return {"seconds": seconds, "rows": result.rows_total}


def _reconcile_again(root: str) -> dict[str, Any]:
    """A second reconciliation of the embeddings (a new embedding code version), on the first one's output:
    shows whether the first one left its files in id order (no spill of the old rows)."""
    from metaxy_core import DeltaMetadataStore
    from metaxy_core.migrations import MigrationExecutor
    from metaxy_core.testing import video_graph

    _, new = C.graphs()
    newer = video_graph(prefix="bench", transcript="1", refined=True, embedding="2")
    store = DeltaMetadataStore(root, project="bench")
    store.push_snapshot(newer)
    first = C.reconcile_migration(new, new)
    migration = C.reconcile_migration(new, newer, "20250102_000000_new_embedding").model_copy(
        update={"parent": first.migration_id}
    )
    t0 = time.perf_counter()
    result = MigrationExecutor(store, graph=newer, run_id="bench2").apply_migration(migration)
    seconds = time.perf_counter() - t0
    assert result.status == "completed", result
    return {"seconds": seconds, "rows": result.rows_total}


def _export_output(root: str, out: str) -> dict[str, Any]:
    import polars as pl

    _, new = C.graphs()
    lf = pl.scan_delta(f"{root}/bench__embeddings").filter(
        pl.col("metaxy_feature_version") == new.feature_version(C.EMB)
    )
    lf.sink_parquet(out)
    return {"rows": pl.scan_parquet(out).select(pl.len()).collect().item()}


def _bare_write_delta(parquet: str, target: str) -> dict[str, Any]:
    import resource

    import polars as pl

    shutil.rmtree(target, ignore_errors=True)
    df = pl.read_parquet(parquet)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    df.write_delta(target, mode="append")
    return {"seconds": time.perf_counter() - t0, "rows": df.height, "rss_before_mib": before}


def _resolve_ours(root: str) -> dict[str, Any]:
    from metaxy_core import DeltaMetadataStore

    _, new = C.graphs()
    store = DeltaMetadataStore(root, project="bench")
    t0 = time.perf_counter()
    inc = store.resolve_update(C.EMB, graph=new).collect()
    return {"seconds": time.perf_counter() - t0, "rows": inc.added.height + inc.changed.height}


def _resolve_by_hand(root: str) -> dict[str, Any]:
    """The same result written directly in polars: scan, filter, hash, join (no latest-row selection)."""
    import polars as pl
    import polars_hash  # noqa: F401

    from metaxy_core.store.provenance import combined_provenance, field_provenance

    _, new = C.graphs()
    t0 = time.perf_counter()
    ids = ["sample_uid"]
    up = pl.scan_delta(f"{root}/bench__raw").filter(
        pl.col("metaxy_feature_version") == new.feature_version(C.RAW)
    )
    dv = pl.col("metaxy_data_version_by_field")
    expected = up.select(
        *ids,
        pl.struct(
            field_provenance(new.field_version(C.EMB, "embedding"), [dv.struct.field("frames")]).alias(
                "embedding"
            ),
            field_provenance(new.field_version(C.EMB, "transcript"), [dv.struct.field("audio")]).alias(
                "transcript"
            ),
        ).alias("pbf"),
    ).with_columns(combined_provenance("pbf", ["embedding", "transcript"]).alias("prov"))
    stored = pl.scan_delta(f"{root}/bench__embeddings").select(
        *ids, "metaxy_provenance_by_field", pl.col("metaxy_provenance").alias("stored")
    )
    added = expected.join(stored.select(ids), on=ids, how="anti")
    changed = (
        expected.join(stored.select(*ids, "stored"), on=ids, how="inner")
        .filter(pl.col("prov") != pl.col("stored"))
        .drop("stored")
    )
    removed = stored.join(expected.select(ids), on=ids, how="anti")
    a, c, _ = pl.collect_all([added, changed, removed])
    return {"seconds": time.perf_counter() - t0, "rows": a.height + c.height}


def _resolve_bounded(root: str, how: str) -> dict[str, Any]:
    import polars as pl

    from metaxy_core import DeltaMetadataStore

    _, new = C.graphs()
    store = DeltaMetadataStore(root, project="bench")
    t0 = time.perf_counter()
    inc = store.resolve_update(C.EMB, graph=new)
    if how == "counts":
        frames = [inc.added.select(pl.len()), inc.changed.select(pl.len()), inc.removed.select(pl.len())]
        rows = sum(f.item() for f in pl.collect_all(frames))
    else:
        out = f"{root}.changed.parquet"
        inc.changed.sink_parquet(out)
        rows = pl.scan_parquet(out).select(pl.len()).collect().item()
        Path(out).unlink()
    return {"seconds": time.perf_counter() - t0, "rows": rows}


# ---------------------------------------------------------------------- history
def _history_graph(i: int) -> Any:
    from metaxy_core.testing import video_graph

    if i == 0:
        return C.graphs()[0]
    return video_graph(prefix="bench", transcript="1", embedding=str(i))


def _history_migrate(root: str, i: int) -> dict[str, Any]:
    from metaxy_core import DeltaMetadataStore
    from metaxy_core.migrations.reconcile import carry_over

    store = DeltaMetadataStore(root, project="bench")
    before, after = _history_graph(i - 1), _history_graph(i)
    result = carry_over(
        store,
        after.spec(C.EMB),
        old_graph=before,
        new_graph=after,
        write_id=f"history-{i}",
        snapshot_version=after.snapshot_version,
    )
    return {"rows": result.rows}


def _count_current(root: str, feature: str) -> dict[str, Any]:
    import polars as pl

    from metaxy_core import DeltaMetadataStore

    store = DeltaMetadataStore(root, project="bench")
    t0 = time.perf_counter()
    rows = store.read_metadata(feature, graph=_maintenance_graph()).select(pl.len()).collect().item()
    return {"seconds": time.perf_counter() - t0, "rows": rows}


def _read_feature(root: str) -> dict[str, Any]:
    from metaxy_core import DeltaMetadataStore

    old, _ = C.graphs()
    store = DeltaMetadataStore(root, project="bench")
    t0 = time.perf_counter()
    rows = store.read_metadata(C.EMB, graph=old).collect().height
    return {"seconds": time.perf_counter() - t0, "rows": rows}


def _read_current(root: str, feature: str, graph_index: int | None, statistics: bool) -> dict[str, Any]:
    import polars as pl
    from deltalake import DeltaTable

    from metaxy_core import DeltaMetadataStore

    store = DeltaMetadataStore(root, project="bench")
    graph = _history_graph(graph_index) if graph_index is not None else _maintenance_graph()
    t0 = time.perf_counter()
    if statistics:
        rows = store.read_metadata(feature, graph=graph).collect().height
    else:  # the same query over every data file, without the Delta log's file statistics
        files = DeltaTable(store.table_uri(feature)).file_uris()
        lf = pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore").filter(
            pl.col("metaxy_feature_version") == graph.feature_version(feature)
        )
        rows = store.latest_per_sample(lf, list(graph.spec(feature).id_columns)).collect().height
    return {"seconds": time.perf_counter() - t0, "rows": rows}


# --------------------------------------------------------------------- maintenance
def _maintenance_graph() -> Any:
    old, _ = C.graphs()
    return old


def _small_appends(root: str, appends: int, rows: int) -> dict[str, Any]:
    from metaxy_core import DeltaMetadataStore

    shutil.rmtree(root, ignore_errors=True)
    g = _maintenance_graph()
    store = DeltaMetadataStore(root, project="bench")
    t0 = time.perf_counter()
    for i in range(appends):
        store.write_metadata(C.RAW, C.raw_frame(i * rows, (i + 1) * rows), graph=g)
    return {"seconds": time.perf_counter() - t0}


def _maintain(root: str) -> dict[str, Any]:
    from metaxy_core import DeltaMetadataStore

    store = DeltaMetadataStore(root, project="bench")
    t0 = time.perf_counter()
    optimized = store.optimize(C.RAW)
    store.checkpoint(C.RAW)
    vacuumed = store.vacuum(C.RAW, retention_hours=0)
    return {
        "seconds": time.perf_counter() - t0,
        "files_before": optimized[0].files_before,
        "files_after": optimized[0].files_after,
        "vacuumed": vacuumed[0].files_removed,
    }


def _file_count(root: str) -> dict[str, Any]:
    from deltalake import DeltaTable

    return {"files": len(DeltaTable(f"{root}/bench__raw").file_uris())}


# ------------------------------------------------------------------------ sections
def _systems(args: argparse.Namespace, base: Path) -> list[tuple[str, str | None, Path]]:
    """(label, code folder, store folder) of the code under test, and of ``--baseline`` when given."""
    out: list[tuple[str, str | None, Path]] = [("ours", None, base)]
    if args.baseline:
        out.append(("baseline", args.baseline, base / "baseline"))
    return out


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run, with ``min_cpu_s``: the least CPU of any run (on a loaded machine, wall time varies
    far more than CPU time)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    return {**min(ok, key=lambda r: r["seconds"]), "min_cpu_s": min(r["cpu_s"] for r in ok)}


def _vs(best: dict[str, dict[str, Any]], label: str, key: str) -> float | str:
    """``best[label][key]`` relative to the baseline's ("" without a baseline)."""
    if "baseline" not in best or "error" in best["baseline"]:
        return ""
    return best[label][key] / best["baseline"][key]


def _recon_row(
    n: int, layout: str, what: str, b: dict[str, Any], bare: dict[str, Any], vs_seconds: Any, vs_cpu: Any
) -> list[Any]:
    """One row of the recon table: a reconciliation's figures and its ratios to the bare write."""
    if "error" in b:
        return [n, layout, what, b["error"], "", "", "", "", ""]
    return [
        n,
        layout,
        what,
        b["seconds"],
        n / b["seconds"],
        b["min_cpu_s"],
        b["peak_rss_mib"],
        bare["seconds"] / b["seconds"],
        bare["seconds"] / b["process_s"],
        vs_seconds,
        vs_cpu,
    ]


def section_recon(args: argparse.Namespace, base: Path) -> None:
    rows = []
    systems = _systems(args, base)
    for n in args.sizes:
        for layout in args.layouts:
            if layout == "shuffled" and n != args.sizes[0] and args.first_shuffled_only:
                continue
            sources = {
                label: pristine(where, n, layout, args.rebuild, code) for label, code, where in systems
            }
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in systems}
            again: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in systems}
            bare: dict[str, Any] | None = None
            for _ in range(args.repeat):
                for label, code, _ in systems:  # interleaved: load changes hit both alike
                    work = fresh_copy(sources[label], base / "work")
                    started = time.perf_counter()
                    runs[label].append(C.run_isolated(_reconcile, str(work), code=code))
                    # the whole process: interpreter start, imports, the apply, exit
                    runs[label][-1]["process_s"] = time.perf_counter() - started
                    if label == "ours" and "error" not in runs[label][-1]:
                        out = base / "output.parquet"
                        C.run_isolated(_export_output, str(work), str(out))
                        theirs = C.run_isolated(_bare_write_delta, str(out), str(base / "bare"))
                        bare = theirs if bare is None or theirs["seconds"] < bare["seconds"] else bare
                    if args.second_run and "error" not in runs[label][-1]:
                        started = time.perf_counter()
                        again[label].append(C.run_isolated(_reconcile_again, str(work), code=code))
                        again[label][-1]["process_s"] = time.perf_counter() - started
            best = {label: _best(r) for label, r in runs.items()}
            if "error" in best["ours"] or bare is None:
                rows.append([n, layout, "ours", best["ours"].get("error", "?"), "", "", "", "", ""])
                continue
            for label, _, _ in systems:
                rows.append(
                    _recon_row(
                        n,
                        layout,
                        f"reconciliation ({label})",
                        best[label],
                        bare,
                        _vs(best, label, "seconds"),
                        _vs(best, label, "min_cpu_s"),
                    )
                )
            for label, _, _ in systems if args.second_run else []:
                rows.append(
                    _recon_row(n, layout, f"2nd reconciliation ({label})", _best(again[label]), bare, "", "")
                )
            rows.append(
                [
                    n,
                    layout,
                    "bare write_delta",
                    bare["seconds"],
                    n / bare["seconds"],
                    "",
                    bare["peak_rss_mib"],
                    1.0,
                    "",
                    "",
                    "",
                ]
            )
            shutil.rmtree(base / "work", ignore_errors=True)
            shutil.rmtree(base / "bare", ignore_errors=True)
    print()
    print(
        C.fmt_table(
            "Reconciliation (MigrationExecutor, DataVersionReconciliation) vs a bare write_delta of its "
            f"output (best of {args.repeat})",
            [
                "rows",
                "layout",
                "what",
                "seconds",
                "rows/s",
                "min cpu s",
                "peak RSS MiB",
                "throughput vs bare",
                "whole process vs bare",
                "time vs baseline",
                "cpu vs baseline",
            ],
            rows,
        )
    )


def section_resolve(args: argparse.Namespace, base: Path) -> None:
    n = args.resolve_rows
    src = pristine(base, n, "clustered", args.rebuild)
    ours_best = hand_best = None
    for _ in range(args.repeat):  # interleaved, best of
        hand = C.run_isolated(_resolve_by_hand, str(src))
        ours = C.run_isolated(_resolve_ours, str(src))
        hand_best = hand if hand_best is None or hand["seconds"] < hand_best["seconds"] else hand_best
        ours_best = ours if ours_best is None or ours["seconds"] < ours_best["seconds"] else ours_best
    assert ours_best is not None and hand_best is not None
    rows = [
        [
            n,
            "resolve_update(...).collect()",
            ours_best["seconds"],
            n / ours_best["seconds"],
            ours_best["peak_rss_mib"],
            ours_best["seconds"] / hand_best["seconds"],
        ],
        [
            n,
            "hand-written polars",
            hand_best["seconds"],
            n / hand_best["seconds"],
            hand_best["peak_rss_mib"],
            1.0,
        ],
    ]
    print()
    print(
        C.fmt_table(
            f"resolve_update vs the same scan + hash + join by hand (best of {args.repeat})",
            ["rows", "what", "seconds", "rows/s", "peak RSS MiB", "time vs hand"],
            rows,
        )
    )
    rows = []
    for size in args.sizes:
        src = pristine(base, size, "clustered", args.rebuild)
        for how in ("counts", "sink"):
            out = C.run_isolated(_resolve_bounded, str(src), how)
            rows.append([size, how, out.get("seconds", out.get("error")), out.get("peak_rss_mib", "")])
    print()
    print(
        C.fmt_table(
            "resolve_update memory at scale (counts of added/changed/removed; sink of changed)",
            ["rows", "what", "seconds", "peak RSS MiB"],
            rows,
        )
    )


def section_read(args: argparse.Namespace, base: Path) -> None:
    rows = []
    systems = _systems(args, base)
    for n in args.sizes:
        for layout in args.layouts:
            sources = {
                label: pristine(where, n, layout, args.rebuild, code) for label, code, where in systems
            }
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in systems}
            for _ in range(args.repeat):
                for label, code, _ in systems:  # interleaved: load changes hit both alike
                    runs[label].append(C.run_isolated(_read_feature, str(sources[label]), code=code))
            best = {label: _best(r) for label, r in runs.items()}
            for label, _, _ in systems:
                b = best[label]
                if "error" in b:
                    rows.append([n, layout, label, b["error"], "", "", "", ""])
                    continue
                assert b["rows"] == n, b
                ratio, cpu = _vs(best, label, "seconds"), _vs(best, label, "min_cpu_s")
                rows.append([n, layout, label, b["seconds"], n / b["seconds"], b["peak_rss_mib"], ratio, cpu])
    print()
    print(
        C.fmt_table(
            f"read_metadata(...).collect() of a whole feature (best of {args.repeat}): clustered = no "
            "selection needed (proven by file statistics), shuffled = newest-row selection over every row",
            [
                "rows",
                "layout",
                "code",
                "seconds",
                "rows/s",
                "peak RSS MiB",
                "time vs baseline",
                "cpu vs baseline",
            ],
            rows,
        )
    )


def section_history(args: argparse.Namespace, base: Path) -> None:
    src = pristine(base, 1_000_000, "clustered", args.rebuild)
    work = fresh_copy(src, base / "history")
    rows = []
    done = 0
    for k in (0, 1, 2, 4, 8):
        while done < k:
            done += 1
            C.run_isolated(_history_migrate, str(work), done)
        with_stats = min(
            (C.run_isolated(_read_current, str(work), C.EMB, k, True) for _ in range(args.repeat)),
            key=lambda r: r["seconds"],
        )
        without = min(
            (C.run_isolated(_read_current, str(work), C.EMB, k, False) for _ in range(args.repeat)),
            key=lambda r: r["seconds"],
        )
        stored = (k + 1) * 1_000_000
        rows.append(
            [
                k,
                stored,
                with_stats["seconds"],
                with_stats["peak_rss_mib"],
                without["seconds"],
                without["peak_rss_mib"],
                without["seconds"] / with_stats["seconds"],
            ]
        )
    shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        C.fmt_table(
            "Reading the current version (1M samples) as history grows (best of "
            f"{args.repeat}): read_metadata vs the same query without file statistics",
            ["migrations", "stored rows", "read s", "RSS MiB", "no-stats s", "no-stats RSS", "speed-up"],
            rows,
        )
    )


def section_maint(args: argparse.Namespace, base: Path) -> None:
    root = base / "appends"
    out = C.run_isolated(_small_appends, str(root), args.appends, 1000)
    if "error" in out:
        raise SystemExit(out["error"])

    def best(fn: Any, *fn_args: Any) -> dict[str, Any]:
        return min((C.run_isolated(fn, *fn_args) for _ in range(args.repeat)), key=lambda r: r["seconds"])

    files_before = C.run_isolated(_file_count, str(root))["files"]
    read_before = best(_read_current, str(root), C.RAW, None, True)
    count_before = best(_count_current, str(root), C.RAW)
    maint = C.run_isolated(_maintain, str(root))
    files_after = C.run_isolated(_file_count, str(root))["files"]
    read_after = best(_read_current, str(root), C.RAW, None, True)
    count_after = best(_count_current, str(root), C.RAW)
    rows = [
        [
            "before",
            files_before,
            read_before["rows"],
            read_before["seconds"],
            count_before["seconds"],
            read_before["peak_rss_mib"],
            "",
        ],
        [
            "optimize + checkpoint + vacuum",
            "",
            "",
            maint["seconds"],
            "",
            maint["peak_rss_mib"],
            f"{maint['vacuumed']} files vacuumed",
        ],
        [
            "after",
            files_after,
            read_after["rows"],
            read_after["seconds"],
            count_after["seconds"],
            read_after["peak_rss_mib"],
            (
                f"read {read_before['seconds'] / read_after['seconds']:.1f}x, "
                f"count {count_before['seconds'] / count_after['seconds']:.1f}x faster"
            ),
        ],
    ]
    shutil.rmtree(root, ignore_errors=True)
    print()
    print(
        C.fmt_table(
            f"Delta maintenance on a table of {args.appends} small appends "
            f"(1000 rows each; best of {args.repeat})",
            ["state", "data files", "rows", "read s", "count s", "peak RSS MiB", "note"],
            rows,
        )
    )


# -------------------------------------------------------------------------- dagster
NOOP_OPS = """
from typing import Any

from pydantic import field_validator

from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations.ops import BaseOperation, StepOutcome


class Noop(BaseOperation):
    \"\"\"Does nothing: the benchmark measures the engine's and Dagster's own cost per migration.\"\"\"

    features: list[FeatureKey]

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, value: Any) -> Any:
        return [FeatureKey(v) for v in value]

    def features_for(self, ctx):
        return list(self.features)

    def run(self, ctx, feature):
        return StepOutcome(0)
"""

GRAPH_MODULE = """
from metaxy_core.testing import declare_video_features

declare_video_features(prefix="bench", transcript="1", refined=False)
"""


def _setup_chain(project: str, count: int) -> dict[str, Any]:
    import yaml

    from metaxy_core import DeltaMetadataStore, MetaxyConfig
    from metaxy_core.migrations import MigrationExecutor, load_chain

    root = Path(project)
    shutil.rmtree(root, ignore_errors=True)
    (root / "migrations").mkdir(parents=True)
    (root / "bench_noop_ops.py").write_text(NOOP_OPS)
    (root / "bench_graph.py").write_text(GRAPH_MODULE)
    (root / "metaxy.toml").write_text(
        'project = "bench"\nentrypoints = ["bench_graph"]\nmigrations_dir = "migrations"\n'
        '[store]\nroot = "store"\n'
    )
    parent = "initial"
    for i in range(count):
        mid = f"20250101_{i // 60:04d}{i % 60:02d}_m{i}"
        data = {
            "migration_id": mid,
            "created_at": "2025-01-01T00:00:00+00:00",
            "parent": parent,
            "kind": "full_graph",
            "ops": [{"type": "bench_noop_ops.Noop", "features": [C.RAW]}],
        }
        (root / "migrations" / f"{mid}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        parent = mid
    config = MetaxyConfig.load(root / "metaxy.toml")
    graph = config.load_features()
    store = config.get_store()
    store.write_metadata(C.RAW, C.raw_frame(0, 10), graph=graph)
    t0 = time.perf_counter()
    results = MigrationExecutor(store, graph=graph).apply(load_chain(root / "migrations"))
    assert len(results) == count
    _ = DeltaMetadataStore
    return {"apply_s": time.perf_counter() - t0}


def _engine_noop(project: str) -> dict[str, Any]:
    from metaxy_core import MetaxyConfig
    from metaxy_core.migrations import MigrationExecutor, load_chain

    config = MetaxyConfig.load(Path(project) / "metaxy.toml")
    graph, store = config.load_features(), config.get_store()
    chain = load_chain(Path(project) / "migrations")
    executor = MigrationExecutor(store, graph=graph)
    t0 = time.perf_counter()
    assert executor.apply(chain) == []
    whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    for migration in chain:
        assert executor.apply_migration(migration).status == "already_applied"
    each = (time.perf_counter() - t0) / len(chain)
    return {"apply_all_s": whole, "per_migration_s": each, "migrations": len(chain)}


def _dagster(project: str) -> dict[str, Any]:
    from metaxy_dagster import APPLY_JOB_NAME, build_migration_definitions

    config = str(Path(project) / "metaxy.toml")
    build_migration_definitions(config_path=config)  # warm Dagster's import-time caches
    wall, cpu = time.perf_counter(), time.process_time()
    defs = build_migration_definitions(config_path=config)
    load_s, load_cpu = time.perf_counter() - wall, time.process_time() - cpu
    job = defs.resolve_job_def(APPLY_JOB_NAME)
    t0 = time.perf_counter()
    result = job.execute_in_process(run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
    run_s = time.perf_counter() - t0
    assert result.success
    statuses = {
        e.materialization.metadata["metaxy/status"].value for e in result.get_asset_materialization_events()
    }
    return {
        "load_s": load_s,
        "load_cpu_s": load_cpu,
        "run_s": run_s,
        "statuses": sorted(statuses),
        "assets": len(list(defs.assets)),
    }


def section_dagster(args: argparse.Namespace, base: Path) -> None:
    project = base / "dagster200"
    setup = C.run_isolated(_setup_chain, str(project), args.migrations, timeout=7200)
    if "error" in setup:
        raise SystemExit(setup["error"])
    engine = C.run_isolated(_engine_noop, str(project))
    rows = [
        [
            "engine: apply 200 pending (Noop ops), setup",
            setup["apply_s"],
            setup["apply_s"] / args.migrations,
            setup["peak_rss_mib"],
        ],
        [
            "engine: MigrationExecutor.apply, all applied (1 log read)",
            engine["apply_all_s"],
            engine["apply_all_s"] / args.migrations,
            engine["peak_rss_mib"],
        ],
        [
            "engine: apply_migration per migration, all applied",
            engine["per_migration_s"] * args.migrations,
            engine["per_migration_s"],
            engine["peak_rss_mib"],
        ],
    ]
    dag = C.run_isolated(_dagster, str(project))
    if "error" in dag:
        rows.append(["dagster", dag["error"], "", ""])
    else:
        rows.append(
            [
                f"dagster: build definitions ({dag['assets']} assets; CPU {dag['load_cpu_s']:.2f} s)",
                dag["load_s"],
                dag["load_s"] / args.migrations,
                dag["peak_rss_mib"],
            ]
        )
        rows.append(
            [
                f"dagster: apply job in process, all applied ({', '.join(dag['statuses'])})",
                dag["run_s"],
                dag["run_s"] / args.migrations,
                dag["peak_rss_mib"],
            ]
        )
    print()
    print(
        C.fmt_table(
            f"{args.migrations} migrations: definitions and no-op applies",
            ["what", "seconds", "per migration s", "peak RSS MiB"],
            rows,
        )
    )


def section_s3(args: argparse.Namespace, base: Path) -> None:
    import _scale_s3

    rows = _scale_s3.section_s3(
        args.s3_sizes,
        args.repeat,
        base,
        [(label, code) for label, code, _ in _systems(args, base)],
    )
    print()
    print(
        C.fmt_table(
            "Reconciliation on an S3-compatible server (moto, 127.0.0.1) vs a bare write_delta of its output "
            f"to the same server (best of {args.repeat}; load average {_load()})",
            ["rows", "what", "seconds", "cpu s", "peak RSS MiB", "throughput vs bare"],
            rows,
        )
    )


def _load() -> str:
    import os

    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="5000000,10000000", help="comma-separated row counts")
    parser.add_argument("--layouts", default="clustered,shuffled", help="clustered and/or shuffled")
    parser.add_argument(
        "--first-shuffled-only",
        action="store_true",
        help="shuffled layout only at the first size (default: every size; the goal is both at each)",
    )
    parser.add_argument("--all-shuffled", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument(
        "--second-run",
        action="store_true",
        help="recon: also time a second reconciliation of the feature on the first one's output",
    )
    parser.add_argument("--sections", default="recon,read,resolve,history,maint,dagster,s3")
    parser.add_argument("--migrations", type=int, default=200, help="chain length of the dagster section")
    parser.add_argument("--resolve-rows", type=int, default=1_000_000)
    parser.add_argument("--s3-sizes", default="1000000,2000000,4000000", help="row counts of the s3 section")
    parser.add_argument("--appends", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (best of) for short measurements")
    parser.add_argument("--recon-repeat", type=int, default=1, help="repetitions of each reconciliation")
    parser.add_argument("--dir", default=str(C.ROOT))
    parser.add_argument("--rebuild", action="store_true", help="rebuild the generated stores")
    parser.add_argument(
        "--baseline", help="folder with an earlier metaxy_core to compare with (sections recon and read)"
    )
    args = parser.parse_args()
    if args.baseline and not (Path(args.baseline) / "metaxy_core" / "__init__.py").is_file():
        parser.error(
            f"--baseline {args.baseline}: not a folder holding metaxy_core (make one with "
            "`mkdir DIR && git archive REV metaxy_core | tar -x -C DIR`); a revision is not accepted"
        )
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.s3_sizes = [int(s) for s in args.s3_sizes.split(",") if s]
    args.layouts = [s for s in args.layouts.split(",") if s]
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    sections = args.sections.split(",")
    print(f"machine: {C.run_isolated(_machine)['machine']}", flush=True)
    started = time.perf_counter()
    if "recon" in sections:
        repeat, args.repeat = args.repeat, args.recon_repeat
        section_recon(args, base)
        args.repeat = repeat
    if "read" in sections:
        section_read(args, base)
    if "resolve" in sections:
        section_resolve(args, base)
    if "history" in sections:
        section_history(args, base)
    if "maint" in sections:
        section_maint(args, base)
    if "dagster" in sections:
        section_dagster(args, base)
    if "s3" in sections:
        section_s3(args, base)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
