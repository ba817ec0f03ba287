#!/usr/bin/env bash
# Install nas with its test extras into .venv and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "[test]"
VENV="${VENV:-.venv}"
exec "$VENV/bin/python" -m pytest "$@"
