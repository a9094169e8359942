"""Open the example in the Dagster UI with everything in place.

Run from ``example_project/``::

    python -m example_project.dev              # http://127.0.0.1:3000
    python -m example_project.dev --port 3333 --samples 300

It starts the local S3 (moto) and PostgreSQL (pgserver) servers, seeds them and the store exactly like the
main job (``python -m example_project.run``), then runs ``dagster dev`` with ``AWS_*`` / ``DATABASE_URL``
pointing at the servers and ``DAGSTER_HOME`` in ``.runtime/dagster_home`` (git-ignored). Stop with Ctrl-C: the
UI and both servers shut down. The store is left as the UI left it; the next start seeds it afresh.
``METAXY_STORE_ROOT`` and ``DAGSTER_HOME`` are honoured when set.

In the UI: *Assets* shows the chain (``metaxy/migrations/<id>``) and the feature tables it rewrites
(``video/...``, ``text/...``), with the lineage migration -> feature; launch the job
``metaxy_migrations_plan`` (it only plans) and read each migration's plan on its asset, then launch
``metaxy_migrations_apply`` or materialize assets one by one. *Automation* has the schedule and the snapshot
sensor (both start stopped: turn the sensor on and it requests a run for the pushed snapshot), and the
history sensor, which runs: migrations applied with the CLI show up on their assets within a tick. ``dg dev``
in this folder opens the same UI (without the servers and the seed).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import example_project.features  # noqa: F401  (the code's graph, pushed as the deployed snapshot)
from example_project import PROJECT_DIR, generate
from example_project.servers import local_servers
from metaxy_core import FeatureGraph, MetaxyConfig


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m example_project.dev", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--samples", type=int, default=generate.N_SAMPLES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the UI and the servers like Ctrl-C does
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_DIR / ".runtime" / "dagster_home")
    dagster_home.mkdir(parents=True, exist_ok=True)
    with local_servers() as servers:
        config = MetaxyConfig.load(PROJECT_DIR / "metaxy.toml")
        print(f"resetting and seeding the store {config.store_root}", flush=True)
        generate.seed_s3(servers.s3.client(), n_samples=args.samples, direct_put=servers.s3.direct_put())
        generate.seed_postgres(servers.postgres.uri, n_samples=args.samples)
        generate.reset_store(config.store_root)
        generate.seed_store(
            config.get_store(), n_samples=args.samples, current_graph=FeatureGraph.get_active()
        )
        print(
            f"seeded {args.samples:,} videos; S3 at {servers.s3.endpoint}, "
            f"PostgreSQL at {servers.postgres.uri}"
        )
        print(
            f"starting the Dagster UI on http://{args.host}:{args.port} (Ctrl-C stops it and the servers)",
            flush=True,
        )
        env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
        command = [sys.executable, "-m", "dagster", "dev", "--host", args.host, "--port", str(args.port)]
        process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env)
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            return 0


if __name__ == "__main__":
    sys.exit(main())
