"""Starting a Triton server in Python: ``start`` (what start.sh runs) and ``serve``, a server for
the duration of a ``with`` block.

``start`` refuses ports already in use, and a second start from the same state folder (a lock the
supervisor holds for as long as it runs), starts the server in the background under its supervisor
(which restarts it when a backend process dies or hangs, ``trtis.serving.supervisor``) behind the
HTTP front door (nginx, ``trtis.serving.front_door``), waits until ``/v2/health/ready`` answers (or
shows what Triton's log says and raises), and keeps a state file and a log file in the state folder
so that ``trtis.serving.state_folder.stop`` (``start.sh --stop``) can end it.

    from trtis.serving import serve
    with serve("model_repository") as server:      # free ports, a temporary state folder
        client = trt_client.client.Inference(server.grpc_url, "detection")
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from trtis.serving import docker, embedded, front_door, mps, process
from trtis.serving.health import read_state
from trtis.serving.ports import LOOPBACK, Ports, free_port, listening, probe_host, ready_url
from trtis.serving.security import Security, key_file
from trtis.serving.server_config import ServerConfig
from trtis.serving.state_folder import (ADMIN_KEY_FILE, CONTAINER_FILE, LOG_FILE, STATE_FILE, LaunchError, claim,
                                        record_ports, running, stop)
from trtis.serving.triton_log import read_log, start_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Server:
    """A running server, as ``start`` and ``serve`` hand it out: where to reach it, how it was
    started, and the keys its locked APIs need."""

    repository: Path
    state_dir: Path
    mode: str
    config: ServerConfig  # as started: its ports chosen, its security made

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def ports(self) -> Ports:
        return self.config.chosen_ports

    @property
    def security(self) -> Security:
        return self.config.security

    @property
    def grpc_url(self) -> str:
        return f"{probe_host(self.host)}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"{probe_host(self.host)}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{probe_host(self.host)}:{self.ports.metrics}/metrics"

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


def wait_ready(host: str, port: int, timeout: float, still_running: Callable[[], bool] = lambda: True) -> None:
    """Wait until the server's HTTP readiness endpoint answers 200."""
    url = ready_url(host, port)
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


def start(repository: Path, state_dir: Path, config: ServerConfig = ServerConfig()) -> Server:
    """Start the server on ``repository``, its state and log in ``state_dir``; returns it as started
    (the mode ``auto`` chose, the ports picked for ``ports=None``)."""
    repository = Path(repository)
    if not repository.is_dir():
        raise LaunchError(f"model repository {repository} does not exist: convert a model into it first, "
                          "or pass --model-repository")
    state_dir = Path(state_dir)
    lock = claim(state_dir)
    try:
        return _start_claimed(repository, state_dir, config, lock)
    finally:
        os.close(lock)  # the supervisor keeps its own copy, and with it the lock


def _start_claimed(repository: Path, state_dir: Path, config: ServerConfig, lock: int) -> Server:
    if running(state_dir):
        raise LaunchError(f"a server started from {state_dir} is still running: "
                          f"stop it with ./start.sh --stop --state-dir {state_dir}")
    stop(state_dir)  # a stale state: report it, end its orphans
    host, ports = config.host, config.ports or Ports.free(config.host)
    busy = [f"{name} {port}" for name, port in vars(ports).items() if listening(host, port)]
    if busy:
        raise LaunchError(f"something already listens on {host} port(s) {', '.join(busy)}: stop it, or choose "
                          "other ports with --http-port/--grpc-port/--metrics-port")
    security = config.security() if callable(config.security) else config.security
    for warning in security.exposure_warnings(host, ports.http, ports.grpc, ports.metrics):
        log.warning("warning: %s", warning)
    mode, image = config.mode, config.image
    if mode in ("auto", "docker") and image is None:
        image, image_warning = docker.image_for(repository)
        if image_warning:
            log.warning("warning: %s", image_warning)
    if mode == "auto":
        reason = docker.unavailable_reason(image)
        mode = "embedded" if reason else "docker"
        print(f"Mode auto: {mode}" + (f" ({reason})" if reason else ""))
    if mode == "docker" and config.use_mps:
        raise LaunchError("--mps starts MPS for the embedded server; for a container, run MPS on the host "
                          "(docs/performance/gpu.md) and start without --mps")
    config = replace(config, ports=ports, security=security, mode=mode, image=image)
    door = _front_door(host, ports, state_dir)
    inner = replace(config, ports=Ports(door.http, ports.grpc, door.metrics) if door else ports)
    if mode == "docker":
        _start_docker(repository, state_dir, config, inner, door)
    else:
        _start_embedded(repository, state_dir, config, inner, door, lock)
    record_ports(state_dir, host, ports)
    return Server(repository, state_dir, mode, config)


def _start_embedded(repository: Path, state_dir: Path, config: ServerConfig, inner: ServerConfig,
                    door: _FrontDoor | None, lock: int) -> None:
    """The bundled server under its supervisor, which inherits the state folder's ``lock``."""
    shm_prefix = process.new_shm_prefix()
    log_file = state_dir / LOG_FILE
    server_command = embedded.command(repository, inner, shm_prefix=shm_prefix, http_host=LOOPBACK)
    supervised = [sys.executable, "-m", "trtis.serving.supervisor", "run", "--state-file", str(state_dir / STATE_FILE),
                  "--ready-url", ready_url(LOOPBACK, inner.chosen_ports.http), "--shm-prefix", shm_prefix,
                  "--metrics-url", f"http://{LOOPBACK}:{inner.chosen_ports.metrics}/metrics",
                  "--startup-timeout", str(config.timeout), *config.supervision.flags(),
                  *(["--proxy-binary", str(door.nginx), "--proxy-conf", str(door.conf)] if door else []),
                  "--", *server_command]
    environment = embedded.environment()
    environment["TRTIS_STATE_DIR"] = str(state_dir.resolve())  # where backends keep what they make (compile caches)
    if config.use_mps:
        try:
            environment.update(mps.start(state_dir))
        except mps.MpsError as error:
            raise LaunchError(str(error)) from error
    try:
        with open(log_file, "wb") as log_output:
            supervisor = subprocess.Popen(supervised, stdout=log_output, stderr=subprocess.STDOUT, pass_fds=(lock,),
                                          stdin=subprocess.DEVNULL, env=environment, start_new_session=True)
    except OSError:
        mps.stop(state_dir)
        raise
    try:
        wait_ready(LOOPBACK, inner.chosen_ports.http, config.timeout, still_running=lambda: supervisor.poll() is None)
        _wait_supervisor_ready(state_dir / STATE_FILE)
        if door:  # readiness through the front door too: it is what clients reach
            wait_ready(config.host, config.chosen_ports.http, 10, still_running=lambda: supervisor.poll() is None)
    except LaunchError as error:
        stop(state_dir, after_failed_start=True)
        if supervisor.poll() is None:  # it had not yet written its state file
            supervisor.kill()
        supervisor.wait()
        if config.use_mps:  # its server was a client of the MPS daemon until now
            process.end_stubs(shm_prefix)
            mps.stop(state_dir)
        raise LaunchError(f"{error}; {start_failure(read_log(log_file), str(log_file))}") from error


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


def _start_docker(repository: Path, state_dir: Path, config: ServerConfig, inner: ServerConfig,
                  door: _FrontDoor | None) -> None:
    """The image's server in a container (its own supervisor inside), nginx beside it on this machine."""
    reason = docker.unavailable_reason(config.image)
    if reason:
        raise LaunchError(f"Docker mode is not possible here: {reason}; use --mode embedded")
    result = subprocess.run(docker.command(repository, inner, shm_prefix=process.new_shm_prefix(), http_host=LOOPBACK),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise LaunchError(f"docker run failed: {result.stderr.strip()}")
    (state_dir / CONTAINER_FILE).write_text(result.stdout.strip())
    if door:  # the container has its own supervisor; nginx, outside it, restarts its own workers
        with open(state_dir / LOG_FILE, "ab") as log_output:
            proxy = subprocess.Popen(front_door.command(door.nginx, door.conf), stdout=log_output,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        started = process.identify(proxy.pid)
        (state_dir / STATE_FILE).write_text(json.dumps({"proxy": started.to_json() if started else None}))
    try:
        wait_ready(config.host, config.chosen_ports.http, config.timeout)
    except LaunchError as error:
        container = result.stdout.strip()
        raise LaunchError(f"{error}; {start_failure(docker.logs(container), f'docker logs {container}')}") from error


@contextmanager
def serve(repository: Path | str, config: ServerConfig = ServerConfig(), *, state_dir: Path | None = None,
          restricted: bool = False) -> Iterator[Server]:
    """Run a Triton server on ``repository`` for the duration of a ``with`` block.

    ``config.ports`` None (the default) picks three free ports, so servers can run side by side
    (tests, tuning sweeps). Without ``state_dir`` the state and log files go to a temporary folder.
    The admin APIs are open unless ``restricted`` (then ``Server.admin_headers`` holds the key they
    need, as ``start.sh`` locks them by default). Raises ``LaunchError`` with what the server's log
    says when it does not become ready.
    """
    with tempfile.TemporaryDirectory(prefix="trtis-server-") as scratch:
        state = Path(state_dir) if state_dir is not None else Path(scratch)
        if restricted:
            security = config.security() if callable(config.security) else config.security
            config = replace(config, security=replace(security, admin_key=key_file(state / ADMIN_KEY_FILE)))
        server = start(Path(repository), state, config)
        try:
            yield server
        finally:
            server.stop()
