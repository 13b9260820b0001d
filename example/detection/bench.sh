#!/usr/bin/env bash
# Benchmark the served detection pipeline (see ./bench.sh --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || { echo "bench.sh: $python not found: run ./install.sh first" >&2; exit 1; }
PYTHONPATH="$root/example${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m detection.bench "$@"
