#!/usr/bin/env bash
# Detect objects in images through the served model (see ./client.sh --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || { echo "client.sh: $python not found: run ./install.sh first" >&2; exit 1; }
PYTHONPATH="$root/example${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m detection.client "$@"
