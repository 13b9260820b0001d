#!/usr/bin/env bash
# Pack what a GPU host without a package index needs to run the GPU figures (see README.md here).
#   tools/device/pack.sh            -> .device/server.tar.xz  (the embedded Triton server, trimmed)
#                                      .device/extras/numpy/  (numpy below 2, for Python 3.12)
#                                      .device/extras/wheels/ (the other wheels)
#                                      .device/extras/http/   (tritonclient.http's gevent client, for
#                                                              tools/front_door_cost.py)
#                                      .device/extras/nginx/  (the front door: install.sh's nginx and
#                                                              the system libraries it links)
#                                      .device/gpu-overlay.yaml (the GPU overlay, rendered: image_tree.py)
# (The test images are generated on the GPU host itself: gpu-figures.sh.)
# Run it on this machine after ./install.sh; each bundle fits one 64 MiB transfer beside the tree.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
python=.venv/bin/python
[ -x "$python" ] || { echo "pack.sh: run ./install.sh first" >&2; exit 1; }
site="$("$python" -c 'import site; print(site.getsitepackages()[0])')"
py=3.12  # the GPU host's Python (the stub of this version is kept, the others dropped)
mkdir -p .device/extras/numpy .device/extras/wheels .device/extras/http .device/extras/nginx/sbin .device/extras/nginx/lib

# 1. The server: the pytriton package (its tritonserver binary, the python backend, the stub for $py)
#    and the bundled libraries, without the other stubs and the bundled libpython 3.13; xz -9e (1.8 MB
#    less than xz's default), for the tree beside it grows.
if [ ! -f .device/server.tar.xz ]; then
  XZ_OPT=-9e tar -C "$site" -cJf .device/server.tar.xz \
    --exclude="pytriton/tritonserver/python_backend_stubs/3.[0-9]" \
    --exclude="pytriton/tritonserver/python_backend_stubs/3.1[013-9]" \
    --exclude="nvidia_pytriton.libs/libpython3-*" \
    pytriton nvidia_pytriton.libs
fi

# 2. Wheels the GPU host lacks (numpy below 2 for the Python backend, alone: it is the largest; the gRPC
#    client; COCO scoring).
pins() { grep -E "^($(echo "$@" | tr ' ' '|'))==" constraints.txt; }
download() {
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$@"
}
download .device/extras/numpy $(pins numpy)
download .device/extras/wheels $(pins tritonclient grpcio protobuf pycocotools) python-rapidjson
# pytest, for the tests that need torchvision or a GPU (they skip here), with what it needs.
installed() { "$python" -c 'import sys; from importlib.metadata import version; print(*(f"{n}=={version(n)}" for n in sys.argv[1:]))' "$@"; }
download .device/extras/wheels $(pins pytest pytest-timeout) $(installed pluggy iniconfig packaging pygments)
# tritonclient.http's client (geventhttpclient and what it needs), at the versions of this venv
# (constraints.txt does not pin them): only tools/front_door_cost.py uses it there.
download .device/extras/http $(installed geventhttpclient gevent greenlet zope.event zope.interface brotli certifi)

# 3. nginx for the front door (the GPU host has none): the Debian build install.sh unpacked, and the
#    system libraries it links but glibc's own (setup.sh uses them only where the host lacks one).
nginx=.venv/nginx/usr/sbin/nginx
[ -x "$nginx" ] || { echo "pack.sh: $nginx is missing: run ./install.sh" >&2; exit 1; }
cp "$nginx" .device/extras/nginx/sbin/nginx
ldd "$nginx" | awk '$2 == "=>" && $1 ~ /^lib(crypt|pcre2-8|ssl|crypto|z)\.so/ {print $3}' | while read -r lib; do
  cp -L "$lib" .device/extras/nginx/lib/
done

# 4. The GPU overlay's objects as kubectl renders them (the host has no kubectl): tools/device/image_tree.py
#    runs its tritonserver container there.
.venv/bin/kubectl kustomize deploy/kubernetes/overlays/gpu > .device/gpu-overlay.yaml

du -sh .device/server.tar.xz .device/extras/* .device/gpu-overlay.yaml
