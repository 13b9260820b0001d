#!/usr/bin/env bash
# Usage: check-backends.sh MODEL_REPOSITORY [BACKENDS_DIR]
# Fails, naming the model, when a model of the repository needs a backend that BACKENDS_DIR
# (default: the Triton image's /opt/tritonserver/backends) lacks. The Dockerfile runs it, so an
# image tag without a needed backend (TensorFlow after 25.02) fails at build time, not in the cluster.
set -euo pipefail
repository="${1:?usage: check-backends.sh MODEL_REPOSITORY [BACKENDS_DIR]}"
backends="${2:-/opt/tritonserver/backends}"
[ -d "$repository" ] || { echo "check-backends.sh: no model repository at $repository" >&2; exit 2; }

status=0 models=0
for config in "$repository"/*/config.pbtxt; do
  [ -e "$config" ] || continue
  models=$((models + 1))
  model="$(basename "$(dirname "$config")")"
  # A config names a backend, or a platform whose backend is the part before "_"
  # (tensorflow_graphdef -> tensorflow, onnxruntime_onnx -> onnxruntime, pytorch_libtorch ->
  # pytorch, tensorrt_plan -> tensorrt); an ensemble runs in Triton's core.
  backend="$(sed -n 's/^backend: *"\([^"]*\)".*/\1/p' "$config" | head -n 1)"
  if [ -z "$backend" ]; then
    platform="$(sed -n 's/^platform: *"\([^"]*\)".*/\1/p' "$config" | head -n 1)"
    [ "$platform" = ensemble ] && continue
    backend="${platform%%_*}"
  fi
  if [ -z "$backend" ]; then
    echo "check-backends.sh: $config names neither a backend nor a platform" >&2
    status=1
  elif [ ! -d "$backends/$backend" ]; then
    echo "check-backends.sh: model $model needs the $backend backend, which is not in $backends" \
         "(it has: $(ls "$backends" | tr '\n' ' ')). The TensorFlow backend left the official images" \
         "after 25.02: build with TRITON_TAG=25.02, or convert with --preprocess-format python." >&2
    status=1
  fi
done
[ "$models" -gt 0 ] || { echo "check-backends.sh: no model (*/config.pbtxt) in $repository: run convert.sh first" >&2; exit 2; }
exit "$status"
