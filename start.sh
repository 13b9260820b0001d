#!/usr/bin/env bash
# Start Triton Inference Server on ./model_repository (HTTP 7000, gRPC 7001, metrics 7002).
# ./start.sh --help lists the options; ./start.sh --stop stops it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$here/.venv/bin/python"
[ -x "$python" ] || { echo "start.sh: $python not found: run ./install.sh first" >&2; exit 1; }
TRTIS_MODEL_REPOSITORY="$here/model_repository" TRTIS_STATE_DIR="$here/.triton" \
  exec "$python" -m trtis.serving "$@"
