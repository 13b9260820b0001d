#!/usr/bin/env bash
# The project's Python with example/ on its path: what convert.sh, client.sh, bench.sh and tune.sh run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || { echo "$python not found: run ./install.sh first" >&2; exit 1; }
PYTHONPATH="$root/example${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$@"
