#!/usr/bin/env bash
# Create ./.venv and install metaxy-dagster with its test extras at exactly the versions in uv.lock.
# Sourced by run-example.sh and run-tests.sh (and so by CI); safe to re-run: a no-op sync takes ~50 ms.
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
# uv prints what it resolves, downloads and installs (to stderr), so a first install shows its progress.
.tools/bin/uv sync --locked --extra test
