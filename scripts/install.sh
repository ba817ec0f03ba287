#!/usr/bin/env bash
# Install nas into a virtual environment (default .venv; set VENV=... to choose another).
#   bash scripts/install.sh           # the project
#   bash scripts/install.sh "[test]"  # the project with its test extras
# A torch that is already importable in that environment (CPU or CUDA) is kept; only where none
# is present is the CPU build torch==2.13.0 installed first (pip's local wheel folder holds it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
EXTRAS="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q torch==2.13.0
fi
"$PY" -m pip install -q -e ".$EXTRAS"
echo "nas installed in $VENV ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
