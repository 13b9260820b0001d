"""Starting and stopping the Triton server: ``start.sh`` runs this, and Python code uses ``serve``.

It refuses ports already in use, and a second start from the same state folder (a lock the
supervisor holds for as long as it runs), starts the server in the background under its supervisor
(which restarts it when a backend process dies or hangs, ``trtis.serving.supervisor``) behind the
HTTP front door (nginx, ``trtis.serving.front_door``), waits until ``/v2/health/ready`` answers (or
shows the tail of the log and exits non-zero), and keeps a state file and a log file in the state
folder so that ``--stop`` can end it. ``--stop`` signals only the
processes that file proves are the ones it started (pid, start time, executable), then ends that
server's backend processes and removes its shared memory; a stale file is reported and removed.

    from trtis.serving import serve
    with serve("model_repository") as server:      # free ports, a temporary state folder
        client = trt_client.client.Inference(server.grpc_url, "detection")
"""
from __future__ import annotations

import argparse
import fcntl
import functools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from trtis.serving import docker, embedded, front_door, mps, process
from trtis.serving.security import ADMIN_HEADER, GrpcTls, Security, SecurityError, key_file, read_key
from trtis.serving.supervisor import Supervision, read_state

log = logging.getLogger(__name__)

STATE_FILE = "server.json"
PID_FILE = "tritonserver.pid"  # a bare pid, as earlier launchers and hand-run servers leave it
CONTAINER_FILE = "tritonserver.container"
LOG_FILE = "tritonserver.log"
ADMIN_KEY_FILE = "admin.key"
LOCK_FILE = "server.lock"


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


def _claim(state_dir: Path) -> int:
    """An open, exclusively locked descriptor of the state folder's lock file: the supervisor inherits
    it and holds the lock while it runs, so a second start from the same folder is refused at once."""
    state_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise LaunchError(f"a server started from {state_dir} is still running or starting: stop it with "
                          f"./start.sh --stop --state-dir {state_dir}, or give this one its own --state-dir") from None
    return descriptor


def _ready_url(host: str, port: int) -> str:
    return f"http://{_probe_host(host)}:{port}/v2/health/ready"


# Triton's line for a model that did not load; its reason is one quoted, escaped string:
#   E1126 07:26:52.406581 8170 model_lifecycle.cc:642] "failed to load 'broken' version 1: Internal: ...\n\nAt:\n..."
LOAD_FAILURE = re.compile(r"\] \"failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*)\"$", re.M)
REASON_LINES = 20  # of each reason, at most (a Python backend's ends in its traceback)


def load_failures(log: str) -> list[str]:
    """Each model the log says did not load, with Triton's whole reason (the backend's message often
    spans lines: ``RuntimeError: `` on the first, what went wrong on the next), once."""
    found = []
    for match in LOAD_FAILURE.finditer(log):
        reason = match["reason"].replace("\\n", "\n").replace('\\"', '"')
        lines = [line.rstrip() for line in reason.splitlines() if line.strip()]
        if len(lines) > REASON_LINES:
            lines = [*lines[:REASON_LINES], f"... ({len(lines) - REASON_LINES} more lines in the log)"]
        found.append(f"model '{match['model']}' (version {match['version']}) did not load: " + "\n    ".join(lines))
    return list(dict.fromkeys(found))


def _why(log: str, path: str, lines: int = 60) -> str:
    """What a failed start shows: the models that did not load and where the whole log is, or
    (no model named there) the end of the log."""
    failures = load_failures(log)
    if failures:
        return "\n".join([*failures, f"(the whole log: {path})"])
    return f"last lines of {path}:\n" + "\n".join(log.splitlines()[-lines:])


def _log_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return "(no log)"


def wait_ready(host: str, port: int, timeout: float, still_running=lambda: True) -> None:
    """Wait until the server's HTTP readiness endpoint answers 200."""
    url = _ready_url(host, port)
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


# Which processes a state folder's files prove are ours -------------------------------------------
def _state(state_dir: Path) -> dict | None:
    return read_state(state_dir / STATE_FILE)


def _recorded(state_dir: Path) -> dict[str, process.ProcessId]:
    """The live supervisor and server the state file records, only where they are provably those
    (same pid, start time, boot and executable, and the expected program)."""
    state = _state(state_dir) or {}
    ours = {}
    for role, program in (("supervisor", "trtis.serving.supervisor"), ("server", "tritonserver"), ("proxy", "nginx")):
        recorded = process.ProcessId.from_json(state[role]) if state.get(role) else None
        if recorded is not None and recorded.alive() and any(program in part for part in process.cmdline(recorded.pid)):
            ours[role] = recorded
    return ours


def _bare_pid_server(state_dir: Path) -> process.ProcessId | None:
    """The tritonserver a bare pid file names, when provably that one: the process with that pid runs
    the tritonserver binary and started before the file was written (a reused pid starts later)."""
    pid_file = state_dir / PID_FILE
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    found = process.identify(pid)
    began = process.started_at(pid)
    if found is None or began is None or Path(found.exe).name != "tritonserver":
        return None
    return found if began <= pid_file.stat().st_mtime + 1 else None


def _describe(pid_text: str) -> str:
    try:
        found = process.identify(int(pid_text))
    except ValueError:
        return f"{pid_text!r} is not a pid"
    if found is None:
        return f"pid {pid_text} is not running"
    return f"pid {pid_text} is now another process ({found.exe or 'not ours to inspect'})"


def running(state_dir: Path) -> bool:
    """Whether a server started from ``state_dir`` provably runs (a front door left alone is an orphan)."""
    return (bool(set(_recorded(state_dir)) - {"proxy"}) or _bare_pid_server(state_dir) is not None
            or (state_dir / CONTAINER_FILE).exists())


def stop(state_dir: Path, timeout: float = 30, *, after_failed_start: bool = False) -> bool:
    """Stop the server started from ``state_dir``; returns whether one was running.

    Only processes the state file proves are ours get a signal; then that server's leftover backend
    processes end and its shared-memory regions go, even when the server itself was killed. After a
    failed start a dead server is expected: its state file is removed without a warning."""
    state_dir = Path(state_dir)
    container_file = state_dir / CONTAINER_FILE
    was_running = container_file.exists()
    if was_running:
        docker.stop(container_file.read_text().strip())
        container_file.unlink()
    state_file = state_dir / STATE_FILE
    if state_file.exists():
        state, ours = _state(state_dir) or {}, _recorded(state_dir)
        was_running = was_running or bool(set(ours) - {"proxy"})
        if not was_running and not after_failed_start:
            pid = str((state.get("supervisor") or {}).get("pid", "?"))
            log.warning("stale state file %s: the server it records is not running (%s); removed it, "
                        "signalled nothing", state_file, _describe(pid))
        # The supervisor stops its server itself; whatever is left after that gets the same treatment.
        process.end([ours[role] for role in ("supervisor",) if role in ours], grace=timeout)
        process.end([ours[role] for role in ("server", "proxy") if role in ours], grace=timeout)
        shm_prefix = state.get("shm_prefix")
        if process.SHM_PREFIX.fullmatch(str(shm_prefix)):
            stubs, regions = process.end_stubs(shm_prefix), process.remove_shared_memory(shm_prefix)
            if stubs or regions:
                log.warning("ended %d orphaned backend process(es) and removed %d shared-memory region(s) "
                            "left by the server started from %s", stubs, len(regions), state_dir)
        state_file.unlink(missing_ok=True)
    pid_file = state_dir / PID_FILE
    if pid_file.exists():
        server = _bare_pid_server(state_dir)
        if server is None:
            log.warning("stale pid file %s: %s; removed it, signalled nothing", pid_file, _describe(pid_file.read_text().strip()))
        else:
            stubs = [p for pid in process.children(server.pid) if (p := process.identify(pid)) is not None
                     and Path(p.exe).name == process.STUB_NAME]
            process.end([server], grace=timeout)
            process.end(stubs, grace=0)
            was_running = True
        pid_file.unlink()
    mps.stop(state_dir)  # after the server: its processes are MPS clients
    return was_running


def start(mode: str, repository: Path, host: str, ports: Ports, state_dir: Path, timeout: float,
          image: str | None = None, log_verbose: int = 0, gpus: str = "all", *,
          security: Security | Callable[[], Security] = Security(), use_mps: bool = False,
          supervision: Supervision = Supervision()) -> str:
    """Start the server; returns the mode it runs in. ``image`` None: ``docker.image_for`` picks it.
    ``use_mps``: under its own CUDA MPS control daemon (``trtis.serving.mps``), embedded mode only.
    ``security`` may be a function that makes it (and its key files) once the start is not refused;
    ``supervision`` tunes the supervisor (embedded mode)."""
    repository = Path(repository)
    if not repository.is_dir():
        raise LaunchError(f"model repository {repository} does not exist: run convert.sh first, or pass --model-repository")
    state_dir = Path(state_dir)
    lock = _claim(state_dir)
    try:
        return _start_claimed(mode, repository, host, ports, state_dir, timeout, image, log_verbose, gpus,
                              security, use_mps, supervision, lock)
    finally:
        os.close(lock)  # the supervisor keeps its own copy, and with it the lock


def _start_claimed(mode: str, repository: Path, host: str, ports: Ports, state_dir: Path, timeout: float,
                   image: str | None, log_verbose: int, gpus: str, security: Security | Callable[[], Security],
                   use_mps: bool, supervision: Supervision, lock: int) -> str:
    if running(state_dir):
        raise LaunchError(f"a server started from {state_dir} is still running: "
                          f"stop it with ./start.sh --stop --state-dir {state_dir}")
    stop(state_dir)  # a stale state: report it, end its orphans
    busy = [f"{name} {port}" for name, port in vars(ports).items() if _listening(host, port)]
    if busy:
        raise LaunchError(f"something already listens on {host} port(s) {', '.join(busy)}: stop it, or choose "
                          "other ports with --http-port/--grpc-port/--metrics-port")
    security = security() if callable(security) else security
    for warning in security.exposure_warnings(host, ports.http, ports.grpc, ports.metrics):
        log.warning("warning: %s", warning)
    if mode in ("auto", "docker") and image is None:
        image, image_warning = docker.image_for(repository)
        if image_warning:
            log.warning("warning: %s", image_warning)
    if mode == "auto":
        reason = docker.unavailable_reason(image)
        mode = "embedded" if reason else "docker"
        print(f"Mode auto: {mode}" + (f" ({reason})" if reason else ""))
    shm_prefix = process.new_shm_prefix()
    if mode == "docker" and use_mps:
        raise LaunchError("--mps starts MPS for the embedded server; for a container, run MPS on the host "
                          "(docs/performance/gpu.md) and start without --mps")
    door = _front_door(host, ports, state_dir)
    inner = Ports(door.http, ports.grpc, door.metrics) if door else ports
    if mode == "docker":
        return _start_docker(repository, host, ports, inner, door, state_dir, timeout, image, gpus, security, shm_prefix)

    log_file = state_dir / LOG_FILE
    server_command = embedded.command(embedded.DEFAULT_HOME, repository, host, inner.http, inner.grpc,
                                      inner.metrics, log_verbose, shm_prefix=shm_prefix, security=security,
                                      http_host=LOOPBACK)
    supervised = [sys.executable, "-m", "trtis.serving.supervisor", "run", "--state-file", str(state_dir / STATE_FILE),
                  "--ready-url", _ready_url(LOOPBACK, inner.http), "--shm-prefix", shm_prefix,
                  "--metrics-url", f"http://{LOOPBACK}:{inner.metrics}/metrics", "--startup-timeout", str(timeout),
                  *supervision.flags(),
                  *(["--proxy-binary", str(door.nginx), "--proxy-conf", str(door.conf)] if door else []),
                  "--", *server_command]
    environment = embedded.environment()
    environment["TRTIS_STATE_DIR"] = str(state_dir.resolve())  # where backends keep what they make (compile caches)
    if use_mps:
        try:
            environment.update(mps.start(state_dir))
        except mps.MpsError as error:
            raise LaunchError(str(error)) from error
    try:
        with open(log_file, "wb") as log_output:
            keeper = subprocess.Popen(supervised, stdout=log_output, stderr=subprocess.STDOUT, pass_fds=(lock,),
                                      stdin=subprocess.DEVNULL, env=environment, start_new_session=True)
    except OSError:
        mps.stop(state_dir)
        raise
    try:
        wait_ready(LOOPBACK, inner.http, timeout, still_running=lambda: keeper.poll() is None)
        _wait_supervisor_ready(state_dir / STATE_FILE)
        if door:  # readiness through the front door too: it is what clients reach
            wait_ready(host, ports.http, 10, still_running=lambda: keeper.poll() is None)
    except LaunchError as error:
        stop(state_dir, after_failed_start=True)
        if keeper.poll() is None:  # it had not yet written its state file
            keeper.kill()
        keeper.wait()
        if use_mps:  # its server was a client of the MPS daemon until now
            process.end_stubs(shm_prefix)
            mps.stop(state_dir)
        raise LaunchError(f"{error}; {_why(_log_text(log_file), str(log_file))}") from error
    return mode


def _wait_supervisor_ready(state_file: Path, timeout: float = 10) -> None:
    """Return once the supervisor has seen the server ready too (it polls every 0.2 s), so that
    ``--health`` right after a start does not catch it still saying "starting"; raise when it holds
    the server not ready for a fault Triton does not see (a nearly full /dev/shm)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (read_state(state_file) or {}).get("status") != "ready":
        time.sleep(0.1)
    shortage = (read_state(state_file) or {}).get("shm_shortage")
    if shortage:
        raise LaunchError(f"the server is not ready: {shortage}")


LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class _FrontDoor:
    nginx: Path
    conf: Path
    http: int  # Triton's own HTTP and metrics ports, on loopback
    metrics: int


def _front_door(host: str, ports: Ports, state_dir: Path) -> _FrontDoor | None:
    """nginx's configuration for these ports; None (HTTP and metrics on loopback, said once) without nginx."""
    reason = front_door.unavailable_reason()
    if reason:
        log.warning("warning: %s, so HTTP and metrics listen on %s only and without the front door's limits "
                    "(docs/security.md)", reason, LOOPBACK)
        return None
    nginx, http, metrics = front_door.binary(), free_port(), free_port()
    conf = front_door.write(state_dir, front_door.configuration(host, ports.http, ports.metrics, http, metrics, state_dir))
    try:
        front_door.check(nginx, conf)
    except front_door.FrontDoorError as error:
        raise LaunchError(str(error)) from error
    return _FrontDoor(nginx, conf, http, metrics)


def _start_docker(repository: Path, host: str, ports: Ports, inner: Ports, door: _FrontDoor | None, state_dir: Path,
                  timeout: float, image: str, gpus: str, security: Security, shm_prefix: str) -> str:
    reason = docker.unavailable_reason(image)
    if reason:
        raise LaunchError(f"Docker mode is not possible here: {reason}; use --mode embedded")
    result = subprocess.run(docker.command(repository, host, inner.http, inner.grpc, inner.metrics, image,
                                           gpus if gpus == "all" else f'"device={gpus}"', security=security,
                                           shm_prefix=shm_prefix, http_host=LOOPBACK),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise LaunchError(f"docker run failed: {result.stderr.strip()}")
    (state_dir / CONTAINER_FILE).write_text(result.stdout.strip())
    if door:  # the container has its own supervisor; nginx, outside it, restarts its own workers
        with open(state_dir / LOG_FILE, "ab") as log_output:
            proxy = subprocess.Popen(front_door.command(door.nginx, door.conf), stdout=log_output,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        found = process.identify(proxy.pid)
        (state_dir / STATE_FILE).write_text(json.dumps({"proxy": found.to_json() if found else None}))
    try:
        wait_ready(host, ports.http, timeout)
    except LaunchError as error:
        container = result.stdout.strip()
        raise LaunchError(f"{error}; {_why(docker.logs(container), f'docker logs {container}')}") from error
    return "docker"


def health(state_dir: Path, host: str, http_port: int) -> str | None:
    """Why the server started from ``state_dir`` is unhealthy, or None (``start.sh --health``)."""
    container_file = Path(state_dir) / CONTAINER_FILE
    if container_file.exists():
        return docker.probe(container_file.read_text().strip())
    if not running(state_dir):
        return f"no server is running from {state_dir}"
    from trtis.serving.supervisor import probe

    return probe(_ready_url(host, http_port), Path(state_dir) / STATE_FILE)


@dataclass(frozen=True)
class Server:
    """A running server, as ``serve`` hands it out: where to reach it, how it was started, and the
    keys its locked APIs need."""

    repository: Path
    host: str
    ports: Ports
    state_dir: Path
    mode: str
    security: Security = field(default_factory=Security)

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

    @property
    def admin_key(self) -> str | None:
        """The key the admin APIs (statistics, repository, logging, trace, shared memory) need, or None."""
        return self.security.admin_key

    @property
    def admin_headers(self) -> dict[str, str]:
        """Pass as ``headers=`` to tritonclient's admin calls; empty when they are open."""
        return self.security.admin_headers

    def stop(self) -> bool:
        """Stop it now (leaving the ``with`` block does it too); returns whether it was running."""
        return stop(self.state_dir)


@contextmanager
def serve(repository: Path | str, *, host: str = "127.0.0.1", ports: Ports | Literal["free"] = "free",
          state_dir: Path | None = None, mode: str = "embedded", timeout: float = 300,
          log_verbose: int = 0, restricted: bool = False, inference_key: str | None = None,
          grpc_tls: GrpcTls | None = None, use_mps: bool = False,
          supervision: Supervision = Supervision()) -> Iterator[Server]:
    """Run a Triton server on ``repository`` for the duration of a ``with`` block.

    ``ports="free"`` picks three free ports, so servers can run side by side (tests, tuning
    sweeps). Without ``state_dir`` the state and log files go to a temporary folder. The admin APIs
    are open unless ``restricted`` (then ``Server.admin_headers`` holds the key they need, as
    ``start.sh`` locks them by default). Raises ``LaunchError`` with the end of the server's log
    when it does not become ready. ``use_mps`` as ``start.sh --mps``; ``supervision`` tunes the
    supervisor's hang timeout and restart backoff.
    """
    chosen = Ports(free_port(_probe_host(host)), free_port(_probe_host(host)), free_port(_probe_host(host))) \
        if ports == "free" else ports
    with tempfile.TemporaryDirectory(prefix="trtis-server-") as scratch:
        state = Path(state_dir) if state_dir is not None else Path(scratch)
        security = Security(admin_key=key_file(state / ADMIN_KEY_FILE) if restricted else None,
                            inference_key=inference_key, grpc_tls=grpc_tls)
        started = start(mode, Path(repository), host, chosen, state, timeout, log_verbose=log_verbose, security=security,
                        use_mps=use_mps, supervision=supervision)
        server = Server(Path(repository), host, chosen, state, started, security)
        try:
            yield server
        finally:
            server.stop()


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
        security = functools.cache(lambda: _security(args))  # its key files are made once the start is not refused
        ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
        mode = start(args.mode, args.model_repository, args.host, ports, args.state_dir, args.timeout,
                     args.image, args.log_verbose, args.gpus, use_mps=args.mps, security=security,
                     supervision=Supervision(args.hang_timeout, args.max_restart_backoff))
        security = security()
    except (LaunchError, SecurityError, embedded.EmbeddedServerError) as error:
        print(f"start.sh: {error}", file=sys.stderr)
        return 1
    print(f"Triton is ready ({mode}): HTTP {args.host}:{ports.http}, gRPC {args.host}:{ports.grpc}"
          f"{' (TLS)' if security.grpc_tls else ''}, metrics {args.host}:{ports.metrics}")
    print(f"Model repository: {args.model_repository.resolve()}")
    if mode == "embedded":
        print(f"Log: {(args.state_dir / LOG_FILE).resolve()}  state: {(args.state_dir / STATE_FILE).resolve()}")
    if security.admin_key:
        key_path = (args.admin_key_file or args.state_dir / ADMIN_KEY_FILE)
        print(f"Admin APIs (statistics, model repository, logging, trace, shared memory) need the header "
              f"'{ADMIN_HEADER}: <the key in {key_path}>', e.g.\n"
              f"  curl -H \"{ADMIN_HEADER}: $(cat {key_path})\" http://{_probe_host(args.host)}:{ports.http}/v2/models/stats")
    print("Stop it with: ./start.sh --stop" + (f" --state-dir {args.state_dir}" if args.state_dir != default_state else ""))
    return 0
