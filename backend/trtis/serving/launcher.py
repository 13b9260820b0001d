"""start.sh's command line (``python -m trtis.serving``, ``trtis-server``): start, stop, restart or
check the Triton server of a state folder, and say where it listens and which keys it needs.

The work is the library's: ``trtis.serving.server.start`` starts it, ``trtis.serving.state_folder``
stops it and checks its health.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path

from trtis.serving import embedded
from trtis.serving.ports import Ports, probe_host
from trtis.serving.security import ADMIN_HEADER, GrpcTls, Security, SecurityError, key_file, read_key
from trtis.serving.server import start
from trtis.serving.server_config import ServerConfig
from trtis.serving.state_folder import ADMIN_KEY_FILE, LOG_FILE, STATE_FILE, LaunchError, health, stop
from trtis.serving.supervisor import Supervision


def _security(args: argparse.Namespace) -> Security:
    tls = None
    if args.grpc_tls_cert or args.grpc_tls_key or args.grpc_tls_client_ca:
        if not (args.grpc_tls_cert and args.grpc_tls_key):
            raise SecurityError("gRPC TLS needs both --grpc-tls-cert and --grpc-tls-key")
        tls = GrpcTls(args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_client_ca)
    admin = None if args.no_admin_key else key_file(args.admin_key_file or args.state_dir / ADMIN_KEY_FILE)
    inference = read_key(args.inference_key_file) if args.inference_key_file else None
    return Security(admin_key=admin, inference_key=inference, grpc_tls=tls)


def main(argv: list[str] | None = None) -> int:
    """start.sh: start (or stop, restart, check) the server; 0 on success."""
    parser = argparse.ArgumentParser(prog="start.sh", description="Start (or stop) Triton Inference Server on a model repository.")
    parser.add_argument("--mode", choices=["embedded", "docker", "auto"], default="embedded",
                        help="embedded: the bundled server on this machine (CPU, no Docker); docker: the official "
                             "image on the GPUs; auto: docker where Docker, its NVIDIA runtime and the image exist")
    parser.add_argument("--model-repository", type=Path,
                        default=Path(os.environ.get("TRTIS_MODEL_REPOSITORY", "model_repository")))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes the server: "
                        "see docs/security.md)")
    parser.add_argument("--http-port", type=int, default=Ports.http)
    parser.add_argument("--grpc-port", type=int, default=Ports.grpc)
    parser.add_argument("--metrics-port", type=int, default=Ports.metrics)
    default_state = Path(os.environ.get("TRTIS_STATE_DIR", ".triton"))
    parser.add_argument("--state-dir", type=Path, default=default_state, help="where the state, log and key files go")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for the server to be ready")
    parser.add_argument("--image", help="Docker mode: the Triton image (default: the patched image, or the last one "
                        "with the TensorFlow backend when the repository has a TensorFlow graph)")
    parser.add_argument("--gpus", default="all", help="Docker mode: the GPUs the container sees (e.g. 0,1,2,3); the "
                        "models' instance groups say which of them each model uses")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--hang-timeout", type=float, default=Supervision.hang_timeout_s,
                        help="restart the server when a model has had requests waiting this many seconds and "
                             "finished none (a hung backend process); default %(default)s")
    parser.add_argument("--max-restart-backoff", type=float, default=Supervision.max_backoff_s,
                        help="the longest wait between two restarts after repeated faults (the supervisor never "
                             "gives up); default %(default)s")
    parser.add_argument("--mps", action="store_true", help="GPU hosts: run the model instances under CUDA MPS (their "
                        "own control daemon, stopped with the server), so their GPU work runs side by side")
    locks = parser.add_argument_group("access (docs/security.md)")
    locks.add_argument("--admin-key-file", type=Path, help="the key the admin APIs (logging, trace, shared memory, "
                       f"model repository, statistics) need in header '{ADMIN_HEADER}' (default: "
                       f"STATE_DIR/{ADMIN_KEY_FILE}, made on the first start, readable by you only)")
    locks.add_argument("--no-admin-key", action="store_true", help="leave the admin APIs open (a trusted network only)")
    locks.add_argument("--inference-key-file", type=Path, help="require this key (header 'inference-key') for "
                       "inference, model metadata and config too")
    locks.add_argument("--grpc-tls-cert", type=Path, help="gRPC over TLS: the server's PEM certificate")
    locks.add_argument("--grpc-tls-key", type=Path, help="gRPC over TLS: the server's PEM private key")
    locks.add_argument("--grpc-tls-client-ca", type=Path, help="mutual TLS: accept only clients with a certificate "
                       "signed by this PEM CA")
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--stop", action="store_true", help="stop the server started from --state-dir")
    actions.add_argument("--restart", action="store_true", help="stop the server started from --state-dir first, if any")
    actions.add_argument("--health", action="store_true", help="exit 0 when the server from --state-dir is ready and "
                         "all its backend processes are alive (a health check)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="start.sh: %(message)s")
    try:
        if args.health:
            problem = health(args.state_dir, args.host, args.http_port)
            print(f"unhealthy: {problem}" if problem else "healthy")
            return 1 if problem else 0
        if args.stop:
            print("Server stopped." if stop(args.state_dir) else f"No server was running from {args.state_dir}.")
            return 0
        if args.restart and stop(args.state_dir):
            print("Stopped the running server.")
        config = ServerConfig(
            host=args.host, ports=Ports(args.http_port, args.grpc_port, args.metrics_port), mode=args.mode,
            security=functools.cache(lambda: _security(args)),  # its key files are made once the start is not refused
            supervision=Supervision(args.hang_timeout, args.max_restart_backoff), timeout=args.timeout,
            log_verbose=args.log_verbose, image=args.image, gpus=args.gpus, use_mps=args.mps)
        server = start(args.model_repository, args.state_dir, config)
    except (LaunchError, SecurityError, embedded.EmbeddedServerError) as error:
        print(f"start.sh: {error}", file=sys.stderr)
        return 1
    mode, ports, security = server.mode, server.ports, server.security
    print(f"Triton is ready ({mode}): HTTP {args.host}:{ports.http}, gRPC {args.host}:{ports.grpc}"
          f"{' (TLS)' if security.grpc_tls else ''}, metrics {args.host}:{ports.metrics}")
    print(f"Model repository: {args.model_repository.resolve()}")
    if mode == "embedded":
        print(f"Log: {(args.state_dir / LOG_FILE).resolve()}  state: {(args.state_dir / STATE_FILE).resolve()}")
    if security.admin_key:
        key_path = (args.admin_key_file or args.state_dir / ADMIN_KEY_FILE)
        print(f"Admin APIs (statistics, model repository, logging, trace, shared memory) need the header "
              f"'{ADMIN_HEADER}: <the key in {key_path}>', e.g.\n"
              f"  curl -H \"{ADMIN_HEADER}: $(cat {key_path})\" http://{probe_host(args.host)}:{ports.http}/v2/models/stats")
    print("Stop it with: ./start.sh --stop" + (f" --state-dir {args.state_dir}" if args.state_dir != default_state else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
