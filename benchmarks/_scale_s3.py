"""The ``s3`` section of ``bench_scale.py``: reconciliation on an S3-compatible server vs a bare write there.

A moto S3 server runs on 127.0.0.1 (:class:`metaxy_core.testing.S3Server`, a child process). For each size a
pristine clustered store is written there once by the store itself (files as the store writes them on S3:
delta-rs' snappy in its own row groups; a local store's files differ, LZ4 in 131,072-row groups, and a
store uploaded from disk would measure those), then copied server-side under a fresh prefix of a fresh
bucket for every run (Delta logs hold relative paths, so the copy is the same table), reconciled there
through ``MigrationExecutor`` (lock, progress log, buckets, commits: all on S3), its output rows exported, and
the same rows written with a bare ``DataFrame.write_delta`` to another prefix of the same server (already in
memory; delta-rs defaults). Every measurement is its own spawned process: wall time, CPU time and peak RSS.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import _scale_common as C


def _client(options: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=options["AWS_ENDPOINT_URL"],
        aws_access_key_id=options["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=options["AWS_SECRET_ACCESS_KEY"],
        region_name=options["AWS_REGION"],
    )


def copy_store(source: str, options: dict[str, str], root: str) -> None:
    """Copy the store at ``source`` to ``root`` (both ``s3://bucket/prefix`` on one server), object by
    object on the server."""
    client = _client(options)
    src_bucket, _, src_prefix = source.removeprefix("s3://").partition("/")
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=src_bucket, Prefix=f"{src_prefix}/"):
        for obj in page.get("Contents", []):
            key = f"{prefix}/{obj['Key'].removeprefix(src_prefix + '/')}"
            client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": obj["Key"]})


def _build(root: str, options: dict[str, str], n: int) -> dict[str, Any]:
    return C.build_store(root, n, options=options)


def _reconcile(root: str, options: dict[str, str]) -> dict[str, Any]:
    from metaxy_core import DeltaMetadataStore
    from metaxy_core.migrations import MigrationExecutor

    old, new = C.graphs()
    store = DeltaMetadataStore(root, options, project="bench")
    t0 = time.perf_counter()
    result = MigrationExecutor(store, graph=new, run_id="bench").apply_migration(
        C.reconcile_migration(old, new)
    )
    seconds = time.perf_counter() - t0
    assert result.status == "completed", result
    return {"seconds": seconds, "rows": result.rows_total}


def _export(root: str, options: dict[str, str], out: str) -> dict[str, Any]:
    import polars as pl

    from metaxy_core import DeltaMetadataStore

    _, new = C.graphs()
    store = DeltaMetadataStore(root, options, project="bench")
    store.read_metadata(C.EMB, graph=new).sink_parquet(out)
    return {"rows": pl.scan_parquet(out).select(pl.len()).collect().item()}


def _bare(parquet: str, target: str, options: dict[str, str]) -> dict[str, Any]:
    import polars as pl

    df = pl.read_parquet(parquet)
    t0 = time.perf_counter()
    df.write_delta(target, mode="append", storage_options=options)
    return {"seconds": time.perf_counter() - t0, "rows": df.height}


def section_s3(
    sizes: list[int], repeat: int, base: Path, systems: list[tuple[str, str | None]]
) -> list[list[Any]]:
    """Rows of the S3 table: per size, the best reconciliation of each system (``(label, code folder)``, see
    ``--baseline``) and the best bare write, interleaved on fresh copies of the same store (written by this
    checkout's store on the server)."""
    from metaxy_core.testing import S3Location, S3Server

    rows: list[list[Any]] = []
    with S3Server() as server:
        for n in sizes:
            source = S3Location.create(server.endpoint, prefix=f"pristine/{n}")
            built = C.run_isolated(
                _build, source.root, dict(source.storage_options, AWS_ALLOW_HTTP="true"), n, timeout=7200
            )
            if "error" in built:
                raise SystemExit(f"build on S3 failed: {built['error']}")
            best: dict[str, dict[str, Any]] = {}
            for attempt in range(repeat):
                for label, code in systems:
                    location = S3Location.create(server.endpoint, prefix=f"bench/{n}/{attempt}")
                    options = dict(location.storage_options, AWS_ALLOW_HTTP="true")
                    copy_store(source.root, options, location.root)
                    got = C.run_isolated(_reconcile, location.root, options, code=code)
                    if "error" in got:
                        rows.append([n, f"reconciliation ({label})", got["error"], "", "", ""])
                        continue
                    if label == systems[0][0]:
                        out = str(base / "s3_output.parquet")
                        C.run_isolated(_export, location.root, options, out)
                        bare = C.run_isolated(_bare, out, f"s3://{location.bucket}/bare", options)
                        os.remove(out)
                        _keep_best(best, "bare", bare)
                    _keep_best(best, label, got)
            if "bare" not in best:
                continue
            b = best.pop("bare")
            for label, got in best.items():
                ratio = b["seconds"] / got["seconds"]
                rows.append(
                    [n, f"reconciliation ({label})", got["seconds"], got["cpu_s"], got["peak_rss_mib"], ratio]
                )
            rows.append([n, "bare write_delta", b["seconds"], b["cpu_s"], b["peak_rss_mib"], 1.0])
    return rows


def _keep_best(best: dict[str, dict[str, Any]], label: str, got: dict[str, Any]) -> None:
    if "error" not in got and (label not in best or got["seconds"] < best[label]["seconds"]):
        best[label] = got
