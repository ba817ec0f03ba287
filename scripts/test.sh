#!/usr/bin/env bash
# Install nas with its test extras into .venv, then lint (ruff), type-check (mypy: the packages named in
# pyproject.toml) and run the test suite; the first that fails stops the script. Arguments go to pytest,
# e.g. -m "not slow and not ray" for a quick pass. The tests run on two worker processes (pytest-xdist;
# NAS_TEST_WORKERS=1 for one): most of them use one CPU thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "[test]"
VENV="${VENV:-.venv}"
"$VENV/bin/python" -m ruff check .
"$VENV/bin/python" -m mypy
exec "$VENV/bin/python" -m pytest -n "${NAS_TEST_WORKERS:-2}" --dist loadgroup "$@"
