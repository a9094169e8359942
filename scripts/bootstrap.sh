#!/usr/bin/env bash
# Create ./.venv and install metaxy-dagster with its test extras at exactly the versions in uv.lock.
# Sourced by run-example.sh and run-tests.sh (and so by CI); safe to re-run: a no-op sync takes ~1.5 s.
#
# uv itself comes from the package index, pinned below, into .tools/ (never into the project's venv).
# `--locked` refuses to install when pyproject.toml changed without the lock: refresh it with
#     .tools/bin/uv lock            (keeps every version that still fits; `--upgrade` moves them all)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
UV_VERSION="0.13.9"

if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into .tools/ (from the package index)"
  rm -rf .tools
  "$PYTHON" -m pip install --disable-pip-version-check --no-warn-script-location --progress-bar on \
    --target .tools "uv==$UV_VERSION"
fi
export UV_PYTHON="${UV_PYTHON:-$PYTHON}"
export UV_PROJECT_ENVIRONMENT="$PWD/.venv"
export UV_LINK_MODE="${UV_LINK_MODE:-copy}"
# Compile the installed modules to bytecode once (~20 s on 2 cores the first time, ~1.5 s to re-check):
# where PYTHONDONTWRITEBYTECODE is set (as on CI) nothing else ever writes the caches, and every Python process
# (each `metaxy` command, each Dagster step process, each test subprocess) would compile everything it imports
# again: 1.9 s instead of 1.0 s to import the CLI, 4.0 s instead of 1.9 s to import dagster.
export UV_COMPILE_BYTECODE="${UV_COMPILE_BYTECODE:-1}"
# uv prints what it resolves, downloads and installs (to stderr), so a first install shows its progress.
.tools/bin/uv sync --locked --extra test
