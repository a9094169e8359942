#!/usr/bin/env bash
# Create ./.venv (if missing) and install metaxy-dagster with its test extras from the package index.
# Sourced by run-example.sh and run-tests.sh; safe to re-run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import metaxy_core, metaxy_dagster, moto, pgserver, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.metaxy-installed ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch .venv/.metaxy-installed
fi
