#!/usr/bin/env bash
# The checks that need an NVIDIA GPU (about 2 minutes; under 8 on one GPU): an image folder of the digits
# as 32x32 RGB PNGs, `nas train --space cifar` on it for 2 epochs on CUDA with bf16, subnet latency by CUDA
# events against FLOPs, CUDA peak memory against nas's estimates. One line per check,
# `gpu_check: <name>: ok|FAIL ...`; exit status: the number of FAILs. Never run by the tests or CI.
#   bash scripts/gpu_check.sh               # on a machine with CUDA
#   bash scripts/gpu_check.sh --cpu-dry-run # the same steps, small, on the CPU (checks the script itself)
# PYTHON: the interpreter with nas's dependencies (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec timeout 480 "$PYTHON" scripts/gpu_check.py "$@"
