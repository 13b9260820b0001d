"""The HTTP front door: nginx in front of Triton's HTTP and metrics ports.

Triton 2.51's HTTP server has no body limit, and its parser overflows a thread's stack on some
bodies: a 4 MiB POST sent as ``application/x-www-form-urlencoded`` (curl's default) or a JSON
request nested 150,000 deep kills the whole server (docs/security.md has the measurements).
Triton's own deployment guide puts a reverse proxy in front; this module writes that proxy's
configuration. nginx was chosen over Envoy because every Linux distribution packages it (install.sh
unpacks the distribution's own build into the venv, no root, no service), its limits are plain
directives, and it buffers whole bodies before Triton sees a byte. Clients reach nginx on the
documented ports; Triton listens on loopback ports of its own. gRPC stays direct: its framing
has a length prefix and its parser no such crash (docs/security.md).
"""
from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The error log goes to stderr (``-e``), which needs nginx 1.19.5.
MINIMUM_VERSION = (1, 19, 5)
# The JSON Triton parses (a whole JSON request, or the JSON header of a binary one) is at most
# this many bytes: nesting under it stays within the server's 64 MB thread stacks (embedded.STACK_BYTES).
JSON_DIGITS = 6
JSON_LIMIT = 10 ** JSON_DIGITS - 1
# In the door's scratch folder while the supervisor holds the server not ready (set_not_ready).
NOT_READY_FILE = "not-ready"


class FrontDoorError(RuntimeError):
    """nginx is missing or refuses its configuration."""


@dataclass(frozen=True)
class Limits:
    """What the front door lets through; docs/security.md explains each."""

    max_body_mb: int = 64           # a whole request body, image bytes included
    header_timeout_s: int = 10      # to send the request line and headers
    body_timeout_s: int = 30        # between two reads of the body
    inference_timeout_s: int = 300  # for the server's answer
    connections_per_client: int = 256


def binary() -> Path | None:
    """``$TRTIS_NGINX`` (empty: none), else the nginx install.sh unpacked into this environment, else
    the one on PATH."""
    if "TRTIS_NGINX" in os.environ:
        return Path(os.environ["TRTIS_NGINX"]) if os.environ["TRTIS_NGINX"] else None
    unpacked = Path(sys.prefix) / "nginx" / "usr" / "sbin" / "nginx"
    if unpacked.is_file():
        return unpacked
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    return Path(found) if found else None


def version(nginx: Path) -> tuple[int, ...]:
    shown = subprocess.run([str(nginx), "-v"], capture_output=True, text=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", shown)
    if found is None:
        raise FrontDoorError(f"{nginx} -v printed no version: {shown.strip()!r}")
    return tuple(int(part) for part in found.groups())


def unavailable_reason() -> str | None:
    """Why the front door cannot run here, or None."""
    nginx = binary()
    if nginx is None:
        return "nginx is not installed (./install.sh unpacks it; or apt-get install nginx)"
    if not nginx.is_file():
        return f"{nginx} does not exist"
    try:
        found = version(nginx)
    except (FrontDoorError, OSError) as error:
        return str(error)
    if found < MINIMUM_VERSION:
        return f"{nginx} is nginx {'.'.join(map(str, found))}; the front door needs 1.19.5 or newer"
    return None


def _workers_user() -> str:
    """Started by root, nginx's workers would run as nobody, who cannot write request bodies into the
    state folder or see the supervisor's not-ready flag there: they run as the user who starts it
    (``write`` adds this for the machine it runs on)."""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""


def _listen(host: str, port: int) -> str:
    """nginx's listen address: ``::`` takes IPv4 clients too, as Triton's own gRPC port does."""
    if ":" in host:
        return f"[{host}]:{port}" + (" ipv6only=off" if host == "::" else "")
    return f"{host or '0.0.0.0'}:{port}"


def configuration(host: str, http_port: int, metrics_port: int, triton_http: int, triton_metrics: int,
                  state_dir: Path, limits: Limits = Limits(), workers: int | str = "auto") -> str:
    """nginx's configuration: ``host:http_port`` proxies to Triton's HTTP on 127.0.0.1:``triton_http``,
    ``host:metrics_port`` to its metrics (GET only); ``workers`` processes (auto: one per CPU)."""
    scratch = Path(state_dir).resolve() / "nginx"
    refusal = 'return {code} \'{{"error":"{text}"}}\';'
    proxied = (f"proxy_pass http://triton_http; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
               f"proxy_request_buffering on; proxy_connect_timeout 5s; proxy_send_timeout {limits.body_timeout_s}s; "
               f"proxy_read_timeout {limits.inference_timeout_s}s;")
    return f"""\
# Written by trtis.serving.front_door (start.sh writes one at each start; python -m trtis.serving.front_door prints the pod's).
daemon off;
worker_processes {workers};
pid "{scratch / 'nginx.pid'}";
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    default_type application/json;  # of the refusals below: Triton's own answers keep their type
    client_body_temp_path "{scratch / 'body'}";
    proxy_temp_path "{scratch / 'proxy'}";
    fastcgi_temp_path "{scratch / 'fastcgi'}";
    uwsgi_temp_path "{scratch / 'uwsgi'}";
    scgi_temp_path "{scratch / 'scgi'}";

    client_max_body_size {limits.max_body_mb}m;
    client_body_buffer_size 1m;
    client_header_buffer_size 4k;
    large_client_header_buffers 4 16k;
    client_header_timeout {limits.header_timeout_s}s;
    client_body_timeout {limits.body_timeout_s}s;
    send_timeout {limits.body_timeout_s}s;
    keepalive_timeout 65s;
    keepalive_requests 10000;
    limit_conn_zone $binary_remote_addr zone=per_client:4m;
    limit_conn per_client {limits.connections_per_client};
    limit_conn_status 429;

    # Triton's parser: bodies of other types crash it (form data), compressed ones expand inside it.
    map $http_content_type $refused_type {{
        default 1;
        "" 0;
        "~*^application/(json|octet-stream)\\s*(;.*)?$" 0;
    }}
    map $http_content_encoding $refused_encoding {{ default 1; "" 0; identity 0; }}
    # The JSON Triton parses: on an /infer URL the binary extension's Inference-Header-Content-Length
    # (only /infer reads it: generate and the admin APIs parse the whole body), else the whole body.
    # A request with neither a length nor chunks has no body.
    map "$uri|$http_inference_header_content_length|$content_length|$http_transfer_encoding" $refused_json {{
        default 1;
        "~^[^|]*\\|\\|\\|$" 0;
        "~^[^|]*\\|\\|[0-9]{{1,{JSON_DIGITS}}}\\|$" 0;
        "~^/v2/models/[^/|]+(/versions/[0-9]+)?/infer\\|[0-9]{{1,{JSON_DIGITS}}}\\|[0-9]*\\|" 0;
    }}

    # Pooled connections close after 5 s idle: Triton's own shutdown waits for open ones.
    upstream triton_http {{ server 127.0.0.1:{triton_http}; keepalive 64; keepalive_timeout 5s; }}
    upstream triton_metrics {{ server 127.0.0.1:{triton_metrics}; keepalive 4; keepalive_timeout 5s; }}

    server {{
        listen {_listen(host, http_port)};
        # A NUL in a model or tensor name would be cut by Triton, serving another model.
        if ($request_uri ~ "%00") {{ {refusal.format(code=400, text="a NUL byte in the URL")} }}
        # A | would let a URL stand in for the headers the JSON limit reads (the map's key joins them with |).
        if ($uri ~ "\\|") {{ {refusal.format(code=400, text="a | in the URL")} }}
        if ($refused_type) {{
            {refusal.format(code=415, text="Content-Type must be application/json or application/octet-stream "
                                                "(with curl: -H Content-Type:application/octet-stream)")}
        }}
        if ($refused_encoding) {{ {refusal.format(code=415, text="compressed request bodies are not accepted")} }}
        if ($refused_json) {{
            {refusal.format(code=413, text=f"the JSON of a request (the whole body, or the part that the binary "
                                                f"extension header Inference-Header-Content-Length gives) needs a length "
                                                f"of at most {JSON_LIMIT} bytes: send tensors as binary data")}
        }}
        error_page 413 = @too_large;
        location @too_large {{
            {refusal.format(code=413, text=f"the request body is over {limits.max_body_mb} MB")}
        }}
        # Triton not answering: its supervisor is restarting it (./start.sh --health says why).
        error_page 502 = @restarting;
        location @restarting {{
            add_header Retry-After 5 always;
            {refusal.format(code=503, text="the server is not answering now (restarting after a fault?): try again")}
        }}
        # Triton stays ready while /dev/shm is full; the supervisor knows better (set_not_ready).
        location = /v2/health/ready {{
            if (-f "{scratch / NOT_READY_FILE}") {{ {refusal.format(code=503, text="not ready: ./start.sh --health says why")} }}
            {proxied}
        }}
        location / {{
            {proxied}
        }}
    }}
    server {{
        listen {_listen(host, metrics_port)};
        client_max_body_size 1k;
        location / {{
            limit_except GET {{ deny all; }}
            proxy_pass http://triton_metrics;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def set_not_ready(conf: Path, reason: str | None) -> None:
    """Make the door answer 503 to /v2/health/ready for ``reason`` (a fault Triton does not see), or
    pass readiness to Triton again (None)."""
    flag = Path(conf).parent / NOT_READY_FILE
    if reason:
        flag.write_text(reason + "\n")
    else:
        flag.unlink(missing_ok=True)


def write(state_dir: Path, text: str) -> Path:
    """Write the configuration and nginx's scratch folders into the state folder; returns the file."""
    scratch = Path(state_dir).resolve() / "nginx"
    for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (scratch / folder).mkdir(parents=True, exist_ok=True)
    (scratch / NOT_READY_FILE).unlink(missing_ok=True)  # a server's own supervisor says when it is not ready
    path = scratch / "nginx.conf"
    path.write_text(_workers_user() + text)
    return path


def command(nginx: Path, conf: Path) -> list[str]:
    """nginx in the foreground, its errors on stderr (the server's log), checked before it starts."""
    return [str(nginx), "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)]


def check(nginx: Path, conf: Path) -> None:
    """Raise with nginx's own words when it refuses the configuration."""
    result = subprocess.run([*command(nginx, conf), "-t", "-q"], capture_output=True, text=True)
    if result.returncode != 0:
        raise FrontDoorError(f"nginx refused {conf}: {result.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    """Print a configuration: by default the Kubernetes pod's, where nginx is a sidecar of the Triton
    container (deploy/kubernetes/base/front-door.conf is this output)."""
    parser = argparse.ArgumentParser(prog="python -m trtis.serving.front_door", description=main.__doc__.split(":")[0])
    parser.add_argument("--host", default="0.0.0.0", help="where nginx listens")
    parser.add_argument("--http-port", type=int, default=8080, help="the HTTP port clients reach")
    parser.add_argument("--metrics-port", type=int, default=8082, help="the metrics port Prometheus reaches")
    parser.add_argument("--triton-http", type=int, default=8000, help="Triton's HTTP port, on 127.0.0.1")
    parser.add_argument("--triton-metrics", type=int, default=8002, help="Triton's metrics port, on 127.0.0.1")
    parser.add_argument("--workers", type=int, default=2, help="nginx's worker processes (auto would start one per "
                        "CPU of the node, not of the container)")
    parser.add_argument("--scratch-parent", type=Path, default=Path("/tmp"),
                        help="a writable folder; nginx keeps its pid and request bodies in its nginx/ subfolder")
    args = parser.parse_args(argv)
    print(configuration(args.host, args.http_port, args.metrics_port, args.triton_http, args.triton_metrics,
                        args.scratch_parent, workers=args.workers), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
