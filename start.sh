#!/usr/bin/env bash
# Start Triton Inference Server on ./model_repository (HTTP 7000, gRPC 7001, metrics 7002).
# ./start.sh --help lists the options; ./start.sh --stop stops it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$here/.venv/bin/python"
[ -x "$python" ] || { echo "start.sh: $python not found: run ./install.sh first" >&2; exit 1; }
exec "$python" -m trtis.serving.launcher \
  --model-repository "$here/model_repository" --state-dir "$here/.triton" "$@"
