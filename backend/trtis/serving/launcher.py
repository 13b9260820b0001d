"""Starting and stopping the Triton server: ``start.sh`` runs this, and Python code uses ``serve``.

It refuses ports already in use, starts the server in the background, waits until
``/v2/health/ready`` answers (or shows the tail of the log and exits non-zero), and keeps a pid
file and a log file in the state folder so that ``--stop`` can end it.

    from trtis.serving import serve
    with serve("model_repository") as server:      # free ports, a temporary state folder
        client = trt_client.client.Inference(server.grpc_url, "detection")
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trtis.serving import docker, embedded

PID_FILE = "tritonserver.pid"
CONTAINER_FILE = "tritonserver.container"
LOG_FILE = "tritonserver.log"


class LaunchError(RuntimeError):
    """The server did not start or stop as asked."""


@dataclass
class Ports:
    http: int = 7000
    grpc: int = 7001
    metrics: int = 7002


def _probe_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_probe_host(host), port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for servers started side by side: tests, sweeps, baselines)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(host: str, port: int, timeout: float, still_running=lambda: True) -> None:
    """Wait until the server's HTTP readiness endpoint answers 200."""
    url = f"http://{_probe_host(host)}:{port}/v2/health/ready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not still_running():
            raise LaunchError("the server exited while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise LaunchError(f"the server was not ready within {timeout:.0f} s ({url})")


def start(mode: str, repository: Path, host: str, ports: Ports, state_dir: Path, timeout: float,
          image: str = docker.DEFAULT_IMAGE, log_verbose: int = 0, gpus: str = "all") -> str:
    """Start the server; returns the mode it runs in."""
    repository = Path(repository)
    if not repository.is_dir():
        raise LaunchError(f"model repository {repository} does not exist: run convert.sh first, or pass --model-repository")
    state_dir.mkdir(parents=True, exist_ok=True)
    pid_file, container_file, log_file = state_dir / PID_FILE, state_dir / CONTAINER_FILE, state_dir / LOG_FILE
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        raise LaunchError(f"a server started from {state_dir} is still running (pid {pid_file.read_text().strip()}): "
                          f"stop it with ./start.sh --stop --state-dir {state_dir}")
    busy = [f"{name} {port}" for name, port in vars(ports).items() if _listening(host, port)]
    if busy:
        raise LaunchError(f"something already listens on {host} port(s) {', '.join(busy)}: stop it, or choose "
                          "other ports with --http-port/--grpc-port/--metrics-port")
    if mode == "auto":
        reason = docker.unavailable_reason(image)
        mode = "embedded" if reason else "docker"
        print(f"Mode auto: {mode}" + (f" ({reason})" if reason else ""))
    if mode == "docker":
        reason = docker.unavailable_reason(image)
        if reason:
            raise LaunchError(f"Docker mode is not possible here: {reason}; use --mode embedded")
        result = subprocess.run(docker.command(repository, host, ports.http, ports.grpc, ports.metrics, image,
                                               gpus if gpus == "all" else f'"device={gpus}"'),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise LaunchError(f"docker run failed: {result.stderr.strip()}")
        container_file.write_text(result.stdout.strip())
        try:
            wait_ready(host, ports.http, timeout)
        except LaunchError as error:
            raise LaunchError(f"{error}\n{docker.logs(result.stdout.strip())}") from error
        return mode

    server_command = embedded.command(embedded.DEFAULT_HOME, repository, host, ports.http, ports.grpc,
                                      ports.metrics, log_verbose)
    with open(log_file, "wb") as log:
        process = subprocess.Popen(server_command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=embedded.environment(), start_new_session=True)
    pid_file.write_text(str(process.pid))
    try:
        wait_ready(host, ports.http, timeout, still_running=lambda: process.poll() is None)
    except LaunchError as error:
        stop(state_dir)
        raise LaunchError(f"{error}; last lines of {log_file}:\n{_tail(log_file)}") from error
    return mode


def stop(state_dir: Path, timeout: float = 30) -> bool:
    """Stop the server started from ``state_dir``; returns whether one was running."""
    pid_file, container_file = state_dir / PID_FILE, state_dir / CONTAINER_FILE
    if container_file.exists():
        docker.stop(container_file.read_text().strip())
        container_file.unlink()
        return True
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    running = _alive(pid)
    if running:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink()
    return running


@dataclass(frozen=True)
class Server:
    """A running server, as ``serve`` hands it out: where to reach it and how it was started."""

    repository: Path
    host: str
    ports: Ports
    state_dir: Path
    mode: str

    @property
    def grpc_url(self) -> str:
        return f"{_probe_host(self.host)}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"{_probe_host(self.host)}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_probe_host(self.host)}:{self.ports.metrics}/metrics"

    @property
    def log_file(self) -> Path:
        return self.state_dir / LOG_FILE

    def stop(self) -> bool:
        """Stop it now (leaving the ``with`` block does it too); returns whether it was running."""
        return stop(self.state_dir)


@contextmanager
def serve(repository: Path | str, *, host: str = "127.0.0.1", ports: Ports | Literal["free"] = "free",
          state_dir: Path | None = None, mode: str = "embedded", timeout: float = 300,
          log_verbose: int = 0) -> Iterator[Server]:
    """Run a Triton server on ``repository`` for the duration of a ``with`` block.

    ``ports="free"`` picks three free ports, so servers can run side by side (tests, tuning
    sweeps). Without ``state_dir`` the pid and log files go to a temporary folder. Raises
    ``LaunchError`` with the end of the server's log when it does not become ready.
    """
    chosen = Ports(free_port(_probe_host(host)), free_port(_probe_host(host)), free_port(_probe_host(host))) \
        if ports == "free" else ports
    with tempfile.TemporaryDirectory(prefix="trtis-server-") as scratch:
        state = Path(state_dir) if state_dir is not None else Path(scratch)
        started = start(mode, Path(repository), host, chosen, state, timeout, log_verbose=log_verbose)
        server = Server(Path(repository), host, chosen, state, started)
        try:
            yield server
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="start.sh", description="Start (or stop) Triton Inference Server on a model repository.")
    parser.add_argument("--mode", choices=["embedded", "docker", "auto"], default="embedded",
                        help="embedded: the bundled server on this machine (CPU, no Docker); docker: the official "
                             "image on the GPUs; auto: docker where Docker, its NVIDIA runtime and the image exist")
    parser.add_argument("--model-repository", type=Path,
                        default=Path(os.environ.get("TRTIS_MODEL_REPOSITORY", "model_repository")))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes the server)")
    parser.add_argument("--http-port", type=int, default=Ports.http)
    parser.add_argument("--grpc-port", type=int, default=Ports.grpc)
    parser.add_argument("--metrics-port", type=int, default=Ports.metrics)
    default_state = Path(os.environ.get("TRTIS_STATE_DIR", ".triton"))
    parser.add_argument("--state-dir", type=Path, default=default_state, help="where the pid and log files go")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for the server to be ready")
    parser.add_argument("--image", default=docker.DEFAULT_IMAGE, help="Docker mode: the Triton image")
    parser.add_argument("--gpus", default="all", help="Docker mode: the GPUs the container sees (e.g. 0,1,2,3); the "
                        "models' instance groups say which of them each model uses")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--stop", action="store_true", help="stop the server started from --state-dir")
    parser.add_argument("--restart", action="store_true", help="stop the server started from --state-dir first, if any")
    args = parser.parse_args(argv)
    try:
        if args.stop:
            print("Server stopped." if stop(args.state_dir) else f"No server was running from {args.state_dir}.")
            return 0
        if args.restart and stop(args.state_dir):
            print("Stopped the running server.")
        ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
        mode = start(args.mode, args.model_repository, args.host, ports, args.state_dir, args.timeout,
                     args.image, args.log_verbose, args.gpus)
    except (LaunchError, embedded.EmbeddedServerError) as error:
        print(f"start.sh: {error}", file=sys.stderr)
        return 1
    print(f"Triton is ready ({mode}): HTTP {args.host}:{ports.http}, gRPC {args.host}:{ports.grpc}, "
          f"metrics {args.host}:{ports.metrics}")
    print(f"Model repository: {args.model_repository.resolve()}")
    if mode == "embedded":
        print(f"Log: {(args.state_dir / LOG_FILE).resolve()}  pid file: {(args.state_dir / PID_FILE).resolve()}")
    print("Stop it with: ./start.sh --stop" + (f" --state-dir {args.state_dir}" if args.state_dir != default_state else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
