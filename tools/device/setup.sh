#!/usr/bin/env bash
# On the GPU host, in the repository's root (see README.md here). Two steps, one per transfer:
#   tools/device/setup.sh server     unpack .device/server.tar.xz (the embedded Triton server)
#   tools/device/setup.sh packages   a venv over the host's own packages with the carried wheels
#                                    (numpy below 2 first), linked as ./.venv, server assembled
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
home=/tmp/trtis
case "${1:-}" in
  server)
    mkdir -p "$home/site"
    tar -C "$home/site" -xJf .device/server.tar.xz
    echo "setup.sh: server unpacked in $home/site" ;;
  packages)
    host_site="$(python3 -c 'import site; print(site.getsitepackages()[0])')"
    [ -x "$home/venv/bin/python" ] || python3 -m venv "$home/venv"
    venv_site="$("$home/venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
    find .device/extras -name '*.whl' -print0 | xargs -0 -r "$home/venv/bin/python" -m pip install -q \
      --disable-pip-version-check --no-index --no-deps --no-compile
    # The venv's own packages (numpy 1.26) come first; then the server, the host's torch and friends, the project.
    printf '%s\n' "$home/site" "$host_site" "$root/backend" "$root/client_py" > "$venv_site/trtis-host.pth"
    ln -sfn "$home/venv" .venv
    .venv/bin/python -m trtis.serving.embedded ;;
  *) echo "usage: $0 server|packages" >&2; exit 2 ;;
esac
