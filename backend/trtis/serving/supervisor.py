"""The server's keeper: restarts tritonserver cleanly when one of its backend processes dies.

Each model instance of a Python-based backend runs in a ``triton_python_backend_stub`` process.
When one dies (``kill -9``, the OOM killer), Triton 2.51 neither restarts it nor says so: it keeps
reporting READY and fails every request routed to that instance. Reloading just that model through
the repository API does not help either: the old instance's unload never finishes once a request
has failed on it, and its processes leak. So the supervisor, the server's parent process, watches
the stubs every half second (a dead one stays a zombie child of the server), and on a death, or
when the server itself exits, restarts the whole server: SIGTERM with a short grace for requests
in flight, every stub of that server killed, its shared memory removed, the same command started
again. While it does, the server is down or shutting down, so readiness says no; requests in
flight get an error, none hangs. docs/security.md has the measured recovery times.

    python -m trtis.serving.supervisor run --state-file F --ready-url URL --shm-prefix P -- tritonserver ...
    python -m trtis.serving.supervisor probe --ready-url URL [--state-file F]   # a health command

The launcher runs ``run`` for the embedded server; the Docker image runs it as the container's
command. ``probe`` is what a Docker or Kubernetes health check can run: it fails while the server is
not ready or any stub of it is dead. Standard library only, so it runs in the official image's Python.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from trtis.serving import process

log = logging.getLogger("trtis.supervisor")

POLL_S = 0.5           # how often the stubs are looked at
RESTART_GRACE_S = 3.0  # what requests in flight get to finish before a broken server is killed
MAX_RESTARTS = 5       # within RESTART_WINDOW_S; past that the supervisor gives up and stops
RESTART_WINDOW_S = 600.0


def ready(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_state(path: Path, state: dict) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(state, indent=1))
    os.replace(scratch, path)


class Supervisor:
    def __init__(self, command: list[str], ready_url: str, state_file: Path, shm_prefix: str,
                 startup_timeout: float, stop_timeout: float):
        self.command, self.ready_url, self.shm_prefix = command, ready_url, shm_prefix
        self.state_file, self.startup_timeout, self.stop_timeout = Path(state_file), startup_timeout, stop_timeout
        self.server: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.state = {"supervisor": process.identify(os.getpid()).to_json(), "server": None,
                      "shm_prefix": shm_prefix, "ready_url": ready_url, "status": "starting",
                      "restarts": 0, "recoveries": []}

    def _update(self, **changes) -> None:
        self.state.update(changes)
        _write_state(self.state_file, self.state)

    def _stop_signal(self, signum, frame) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 1 when the server never became ready or kept failing."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_signal)
        restarts: deque[float] = deque()
        failed_at = None
        while True:
            self._launch()
            cause = self._wait_ready()
            if cause is None and not self.stopping.is_set():
                if failed_at is not None:
                    down = time.monotonic() - failed_at
                    log.info("the server is ready again, %.1f s after the failure was seen", down)
                    self._update(recoveries=self.state["recoveries"][-20:] + [{"cause": self.state["last_failure"],
                                                                              "down_s": round(down, 2)}])
                self._update(status="ready")
                cause = self._watch()
            if self.stopping.is_set():
                break
            if failed_at is None and self.state["status"] == "starting":
                log.error("the server did not start: %s", cause)
                return self._shut_down("failed", self.stop_timeout, code=1)
            failed_at = time.monotonic()
            restarts.append(failed_at)
            while restarts and restarts[0] < failed_at - RESTART_WINDOW_S:
                restarts.popleft()
            if len(restarts) > MAX_RESTARTS:
                log.error("%s; %d restarts in %.0f s: giving up", cause, len(restarts) - 1, RESTART_WINDOW_S)
                return self._shut_down("failed", RESTART_GRACE_S, code=1)
            log.error("%s: restarting the server", cause)
            self._update(status="restarting", restarts=self.state["restarts"] + 1, last_failure=cause)
            self._end_server(RESTART_GRACE_S)
        return self._shut_down("stopped", self.stop_timeout, code=0)

    def _launch(self) -> None:
        self.server = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        found = process.identify(self.server.pid)  # None when it died at once: _wait_ready says so
        self._update(server=found.to_json() if found else None)

    def _wait_ready(self) -> str | None:
        """None once ready; else why not."""
        deadline = time.monotonic() + self.startup_timeout
        while not self.stopping.is_set():
            self._reap_orphans()
            if self.server.poll() is not None:
                return f"tritonserver exited with code {self.server.returncode} while starting"
            if ready(self.ready_url):
                return None
            if time.monotonic() > deadline:
                return f"tritonserver was not ready within {self.startup_timeout:.0f} s"
            self.stopping.wait(0.2)
        return None

    def _watch(self) -> str | None:
        """Block until the server or a stub of it dies (returns what happened) or a stop is asked (None)."""
        instances = process.stubs(self.shm_prefix)  # a dead stub's command line is gone: name them now
        while not self.stopping.wait(POLL_S):
            self._reap_orphans()
            if self.server.poll() is not None:
                return f"tritonserver (pid {self.server.pid}) exited with code {self.server.returncode}"
            dead = process.dead_stubs(self.server.pid)
            if dead:
                names = ", ".join(f"{instances.get(pid, 'of an unknown instance')} (pid {pid})" for pid in dead)
                return f"the backend process {names} of tritonserver pid {self.server.pid} died"
            if len(instances) < len(process.children(self.server.pid)):
                instances = process.stubs(self.shm_prefix)
        return None

    def _reap_orphans(self) -> None:
        """As a container's first process, orphans are ours to reap (the server's stubs, once it died)."""
        if os.getpid() != 1:
            return
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.server is not None and pid == self.server.pid:
                self.server.returncode = os.waitstatus_to_exitcode(status)

    def _end_server(self, grace: float) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(grace)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        ended = process.end_stubs(self.shm_prefix)
        regions = process.remove_shared_memory(self.shm_prefix)
        if ended or regions:
            log.info("ended %d leftover backend process(es), removed %d shared-memory region(s)", ended, len(regions))

    def _shut_down(self, status: str, grace: float, code: int) -> int:
        self._update(status="stopping")
        self._end_server(grace)
        if code == 0:
            self.state_file.unlink(missing_ok=True)
        else:
            self._update(status=status, server=None)
        return code


def probe(ready_url: str, state_file: Path | None = None) -> str | None:
    """Why the server is not healthy, or None: it answers ready and none of its stubs is dead.

    With a state file, the server is the one recorded there; without one (inside a container),
    every tritonserver process this machine shows."""
    if not ready(ready_url):
        return f"the server does not answer ready at {ready_url}"
    state = read_state(state_file) if state_file is not None else None
    if state is not None and state.get("status") != "ready":
        return f"the supervisor reports {state.get('status')}: {state.get('last_failure', '')}".rstrip(": ")
    if state is not None and state.get("server"):
        servers = [process.ProcessId.from_json(state["server"]).pid]
    else:
        servers = process.named("tritonserver")
    for server in servers:
        dead = process.dead_stubs(server)
        if dead:
            return f"backend process(es) {dead} of tritonserver pid {server} died"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtis.serving.supervisor", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run tritonserver (the command after --) and keep it healthy")
    run.add_argument("--state-file", type=Path, required=True)
    run.add_argument("--ready-url", required=True, help="the server's /v2/health/ready URL")
    run.add_argument("--shm-prefix", required=True, help="the server's --backend-config python shm-region-prefix-name")
    run.add_argument("--startup-timeout", type=float, default=300)
    run.add_argument("--stop-timeout", type=float, default=20)
    run.add_argument("server_command", nargs=argparse.REMAINDER)
    check = commands.add_parser("probe", help="exit 0 when the server is ready and every backend process alive")
    check.add_argument("--ready-url", default="http://127.0.0.1:8000/v2/health/ready")
    check.add_argument("--state-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s trtis-supervisor: %(message)s")
    if args.command == "probe":
        problem = probe(args.ready_url, args.state_file)
        print(problem or "healthy")
        return 1 if problem else 0
    command = args.server_command[1:] if args.server_command[:1] == ["--"] else args.server_command
    if not command:
        parser.error("run needs the server's command after --")
    if not process.SHM_PREFIX.fullmatch(args.shm_prefix):
        parser.error(f"--shm-prefix {args.shm_prefix!r}: a server's own prefix is trtis_ and 8 hex digits")
    return Supervisor(command, args.ready_url, args.state_file, args.shm_prefix, args.startup_timeout,
                      args.stop_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
