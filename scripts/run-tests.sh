#!/usr/bin/env bash
# Set up the environment (first run only) and run the whole test suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
