#!/usr/bin/env bash
# Quick start, step 1: create .venv (if missing), install the package with its test extras (moto, pgserver,
# psycopg), then run the example's main job: start local S3 and PostgreSQL servers, seed the example data,
# plan the migration chain through Dagster (dry run), apply it, print what changed per feature, stop the servers.
# Arguments go to the main job, e.g. `bash scripts/run-example.sh --samples 300 --verbose`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
cd example_project
exec ../.venv/bin/python -m example_project.run "$@"
