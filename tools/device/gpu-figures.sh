#!/usr/bin/env bash
# On the GPU host, after setup.sh (see README.md here): the GPU pipeline's figures, one step a call.
#   tools/device/gpu-figures.sh convert    convert.sh for the GPU (GPU preprocess, compiled network)
#   tools/device/gpu-figures.sh serve      start the server on it (stays up for the next calls)
#   tools/device/gpu-figures.sh bench      bench.sh on the test images
#   tools/device/gpu-figures.sh tune       tune.sh: network instances, max batch and queue delay swept
#   tools/device/gpu-figures.sh start-times  server start until ready, warm (the shipped inductor cache) and cold
#   tools/device/gpu-figures.sh evaluate   served mAP against the FP32 PyTorch model in process
#   tools/device/gpu-figures.sh split      accuracy_split --device cuda: each GPU difference's share of the loss
#   tools/device/gpu-figures.sh mps on|off CUDA MPS control daemon (start it before the server)
#   tools/device/gpu-figures.sh one-card   the converted repository's GPU instances, on GPU 0 only (the
#                                          one-card baseline of a two-card run, without converting again)
# Settings come from the environment (defaults in brackets): GPUS [0], INSTANCES ["2 3 1"] (pre/net/post per
# GPU), MAX_BATCH [convert.sh's: 32 with the preprocess in the network, 8 else; 64 before `tune`, whose
# settings cannot exceed it], NAME [h100-gpu; tune: tune-h100-gpu], DEVICE_NAME [what nvidia-smi says],
# LEVELS [bench: 1 8 32 64 128 256; tune: 1 32 128], SECONDS_PER_LEVEL [bench: 10; tune: 6], CLIENTS [4],
# BATCHES [1 8 16 32: the in-process network's batch sizes, at most the max batch], NAIVE [0: no naive
# baseline, the hosts lack Flask], START_ARGS (more start.sh flags, e.g. --mps), BENCH_ARGS (more bench.sh
# flags), CONVERT_ARGS (more convert.sh flags, e.g. --no-preprocess-in-network for the two-model ensemble),
# TUNE_INSTANCES ["2 3 4"], TUNE_BATCH ["32 64"], TUNE_DELAY ["0 2000"], TUNE_ARGS (more tune.sh flags);
# reports go to $OUT (the device tool's folder) or reports/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
PATH="$PATH:/usr/local/nvidia/bin"  # the lent hosts keep the driver's tools (nvidia-cuda-mps-control) there
[ -e .venv ] || ln -s /tmp/trtis/venv .venv  # setup.sh packages made it; each transfer drops the link
export PYTHONUNBUFFERED=1
out="${OUT:-$root/reports}"
read -r pre net post <<< "${INSTANCES:-2 3 1}"
gpus="${GPUS:-0}"
card="${DEVICE_NAME:-$(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | sed 's/^ *//' | paste -sd,)}"
images=.device/extras/test
# The test split, generated where the images are used (the host has scikit-image): one transfer less.
[ -f "$images/instances_test.json" ] || example/detection/python.sh -m detection.dataset --split test \
  --count "${IMAGES:-200}" --output "$images"
case "${1:-}" in
  convert)
    # shellcheck disable=SC2086
    example/detection/convert.sh --preprocess-format gpu --network-format compiled --gpus "$gpus" \
      ${MAX_BATCH:+--max-batch-size "$MAX_BATCH"} --preprocess-instances "$pre" --network-instances "$net" \
      --postprocess-instances "$post" --warmup-max-batch "${WARMUP:-4}" --check-images "$images"/images/3_00000{0,1,2}.jpg \
      ${CONVERT_ARGS:-} ;;
  serve)
    # shellcheck disable=SC2086
    ./start.sh --restart --timeout 900 ${START_ARGS:-}
    nvidia-smi --query-gpu=index,memory.used --format=csv
    # GPU memory per process (each model instance is a triton_python_backend_stub named after it).
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | while IFS=, read -r pid used; do
      echo "$used $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -o '[^ /]*_[0-9]*_[0-9]*' | head -1)"
    done ;;
  bench)
    # shellcheck disable=SC2086
    example/detection/bench.sh --image-dir "$images/images" --concurrency ${LEVELS:-1 8 32 64 128 256} \
      --seconds "${SECONDS_PER_LEVEL:-10}" --warmup 5 --clients "${CLIENTS:-4}" --batches ${BATCHES:-1 8 16 32} \
      --naive-concurrency "${NAIVE:-0}" --output "$out" --name "${NAME:-h100-gpu}" --device "$card" ${BENCH_ARGS:-} ;;
  tune)
    # tune.sh on the converted repository: each setting served from its own scratch repository and
    # measured at LEVELS per client (TUNE_INSTANCES network instances per GPU, TUNE_BATCH, TUNE_DELAY).
    # The reference is the best any setting served at each level (measuring it in process would
    # compile the network once more); the winner is reported, not applied.
    # shellcheck disable=SC2086
    example/detection/tune.sh --image-dir "$images/images" --network-instances ${TUNE_INSTANCES:-2 3 4} \
      --max-batch-size ${TUNE_BATCH:-32 64} --max-queue-delay-us ${TUNE_DELAY:-0 2000} \
      --concurrency ${LEVELS:-1 32 128} --clients "${CLIENTS:-4}" --seconds "${SECONDS_PER_LEVEL:-6}" --warmup 2 \
      --no-in-process --output "$out" --name "${NAME:-tune-h100-gpu}" --device "$card" ${TUNE_ARGS:-} ;;
  start-times)
    # Server start until ready with the inductor cache convert.sh shipped (warm), then without it
    # (cold: every instance compiles, and refills the cache); then the first requests' times.
    for start in warm cold; do
      [ "$start" = warm ] || rm -rf model_repository/detection-network/1/inductor-cache
      began=$SECONDS
      # shellcheck disable=SC2086
      ./start.sh --restart --timeout 900 ${START_ARGS:-} > /dev/null
      echo "gpu-figures.sh: $start start: $((SECONDS - began)) s until ready"
      .venv/bin/python - "$(find "$images/images" -name '*.jpg' | sort | head -1)" <<'PY'
import sys, time
import numpy as np
from trt_client import client
data = open(sys.argv[1], "rb").read()
with client.Inference("127.0.0.1:7001", "detection", "1") as runner:
    for n in range(3):
        began = time.perf_counter()
        runner.run(input={"raw_image": np.array([data], dtype=bytes)})
        print(f"gpu-figures.sh: request {n + 1} after ready: {1000 * (time.perf_counter() - began):.0f} ms")
PY
    done ;;
  evaluate)
    .venv/bin/python example/detection/evaluate.py --dataset "$images" --url 127.0.0.1:7001 \
      --report "$out/${NAME:-h100-gpu}-map.md" ;;
  split)
    # Where the served mAP loss comes from: each difference of the GPU pipeline scored alone, in process.
    example/detection/python.sh -m detection.accuracy_split --device cuda --num-images "${IMAGES:-200}" \
      --report "$out/${NAME:-h100-gpu}-accuracy-split.md" ;;
  mps)
    # With MPS the instances' processes share one GPU context, so their kernels run side by side
    # instead of in time slices. Start it before the server; `off` stops it after the server.
    if [ "${2:-on}" = on ]; then nvidia-cuda-mps-control -d && echo "gpu-figures.sh: MPS on"
    # MPS quits only when its clients have ended: stop the server first (a live one made this wait forever).
    elif echo quit | timeout 30 nvidia-cuda-mps-control; then echo "gpu-figures.sh: MPS off"
    else echo "gpu-figures.sh: MPS did not quit in 30 s: stop the server first (./start.sh --stop)" >&2; exit 1; fi ;;
  one-card)
    .venv/bin/python - <<'PY'
from pathlib import Path
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
for path in Path("model_repository").glob("*/config.pbtxt"):
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    for group in config.instance_group:
        if group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU:
            del group.gpus[:]
            group.gpus.append(0)
    path.write_text(text_format.MessageToString(config))
PY
    ;;
  *) echo "usage: $0 convert|serve|bench|tune|start-times|evaluate|split|mps on|off|one-card" >&2; exit 2 ;;
esac
