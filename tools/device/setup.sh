#!/usr/bin/env bash
# On the GPU host, in the repository's root (see README.md here). Two steps, one per transfer:
#   tools/device/setup.sh server     unpack .device/server.tar.xz (the embedded Triton server)
#   tools/device/setup.sh packages   a venv over the host's own packages with the carried wheels
#                                    (numpy below 2 first), linked as ./.venv, server assembled; with
#                                    .device/extras/nginx carried, nginx for the front door in
#                                    /tmp/trtis/nginx/nginx (TRTIS_NGINX=/tmp/trtis/nginx/nginx)
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
    .venv/bin/python -m trtis.serving.embedded
    if [ -f .device/extras/nginx/sbin/nginx ]; then
      # The front door's nginx (the host has none): the binary itself where the host has the system
      # libraries it links, else behind a wrapper that gives it the carried ones (all of them: libssl
      # needs its own libcrypto), for nginx alone.
      rm -rf "$home/nginx" && mkdir -p "$home/nginx"
      install -m 755 .device/extras/nginx/sbin/nginx "$home/nginx/nginx"
      if ! "$home/nginx/nginx" -v 2>/dev/null; then
        mv "$home/nginx/nginx" "$home/nginx/nginx.bin" && cp -r .device/extras/nginx/lib "$home/nginx/lib"
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$home/nginx/lib" "$home/nginx/nginx.bin" > "$home/nginx/nginx"
        chmod 755 "$home/nginx/nginx"
      fi
      "$home/nginx/nginx" -v && echo "setup.sh: nginx for the front door: TRTIS_NGINX=$home/nginx/nginx" \
        "(carried libraries: $(ls "$home/nginx/lib" 2>/dev/null | paste -sd' ' || true))"
    fi ;;
  *) echo "usage: $0 server|packages" >&2; exit 2 ;;
esac
