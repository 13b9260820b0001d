#!/usr/bin/env bash
# The A/B of CenterNet's FP16 form on one GPU host (gpu.md, "The FP16 form"): each arm converted,
# served, then bench.sh at one request in flight and at 4 clients x 1 / 32 / 128.
#   new: this tree (each head's last 1x1 convolution in FP32)
#   old: a copy of this tree with the network file given (FP16 throughout), made here by
#        git show fa5bc5c^:example/detection/network/centernet.py > .device/centernet-fp16-throughout.py
#        and carried with the call (the host has no git).
#   tools/device/ab-fp16-form.sh .device/centernet-fp16-throughout.py old new   # then: ... new old
# Run after the three setup transfers and `gpu-figures.sh mps on`; reports to $OUT (or reports/).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
old_network="$1"; shift
[ -e .venv ] || ln -s /tmp/trtis/venv .venv
copy=/tmp/ab-fp16-throughout
if [ ! -d "$copy" ]; then
  cp -a "$root" "$copy" && cp "$old_network" "$copy/example/detection/network/centernet.py"
  ln -sfn /tmp/trtis/venv "$copy/.venv"
fi
cmp -s "$old_network" "$copy/example/detection/network/centernet.py" \
  || { echo "ab-fp16-form.sh: $copy does not hold $old_network: remove it and run again" >&2; exit 1; }
export OUT="${OUT:-$root/reports}"  # both arms' reports in one folder
for arm in "$@"; do
  dir=$root; [ "$arm" = old ] && dir=$copy
  (cd "$copy" && ./start.sh --stop >/dev/null 2>&1); ./start.sh --stop >/dev/null 2>&1
  run=$((${run:-0} + 1))
  (cd "$dir" && tools/device/gpu-figures.sh convert >/dev/null 2>&1 && tools/device/gpu-figures.sh serve >/dev/null 2>&1 \
    && echo "== $arm" \
    && NAME=ab-$arm-latency-$run CLIENTS=1 LEVELS=1 SECONDS_PER_LEVEL=10 BENCH_ARGS=--no-baselines \
       tools/device/gpu-figures.sh bench 2>&1 | tr '\r' '\n' | grep "^| 1 " \
    && NAME=ab-$arm-$run LEVELS="1 32 128" SECONDS_PER_LEVEL=8 BENCH_ARGS=--no-baselines \
       tools/device/gpu-figures.sh bench 2>&1 | tr '\r' '\n' | grep "^| [0-9]") || echo "== $arm failed: run its steps by hand to see why"
done
