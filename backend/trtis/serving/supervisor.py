"""The server's keeper: restarts tritonserver cleanly when one of its backend processes dies or hangs.

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

It never gives up: after a few quick restarts within ten minutes, each further one waits twice as
long as the last, up to a cap (``RestartPolicy``), and the state file says so while it waits. A
backend process that is stopped (SIGSTOP, a debugger) counts as dead within a second; one that is
alive but answers nothing counts as hung once a model has requests waiting and has finished none
of them for ``--hang-timeout`` seconds (Triton's own counters at the metrics URL, so a busy server
is never taken for a hung one). With ``--proxy-conf`` it also keeps the HTTP front door (nginx,
``trtis.serving.front_door``) running, restarting it alone when it exits. It makes the Python
backend's /dev/shm regions readable by their owner alone, and holds the server not ready (its state,
``probe``, the door's readiness) while /dev/shm has less than ``--shm-floor-mb`` free.

    python -m trtis.serving.supervisor run --state-file F --ready-url URL --shm-prefix P [--metrics-url URL]
        [--proxy-binary NGINX --proxy-conf CONF] -- tritonserver ...
    python -m trtis.serving.supervisor probe --ready-url URL [--state-file F]   # a health command

The launcher runs ``run`` for the embedded server; the Docker image runs it as the container's
command. ``probe`` is what a Docker or Kubernetes health check can run: it fails while the server is
not ready or any stub of it is dead. Standard library only, so it runs in the official image's Python.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from trtis.serving import front_door, process
from trtis.serving.health import probe, ready, shm_shortage, write_state
from trtis.serving.model_progress import Progress

log = logging.getLogger("trtis.supervisor")

POLL_S = 0.5           # how often the stubs are looked at
RESTART_GRACE_S = 3.0  # what requests in flight get to finish before a broken server is killed
STOPPED_GRACE_S = 1.0  # how long a backend process may stay stopped before it counts as dead
HANG_TIMEOUT_S = 120.0  # no request finished while some wait: the default, long enough for a slow first batch
# Triton's HTTP threads parse a request's JSON recursively: a thread stack of 64 MB (Triton's own
# deployment guide gives Docker --ulimit stack=67108864) holds any JSON the front door lets through.
STACK_BYTES = 64 << 20
# Below this much free /dev/shm the Python backend cannot grow its regions for a large request, and
# every request that needs more fails while Triton still reports ready.
SHM_FLOOR_MB = 64


@dataclass(frozen=True)
class RestartPolicy:
    """How long to wait before a restart: nothing for the first ``free`` within ``window_s``, then
    ``first_s``, doubling each time, up to ``max_s``. It never stops trying."""

    free: int = 3
    window_s: float = 600.0
    first_s: float = 1.0
    max_s: float = 30.0

    def delay(self, recent: int) -> float:
        """The wait before the restart that makes ``recent`` failures within the window."""
        beyond = recent - self.free
        return 0.0 if beyond <= 0 else min(self.max_s, self.first_s * 2 ** (beyond - 1))


@dataclass(frozen=True)
class Supervision:
    """What an operator may tune (``start.sh --hang-timeout``, ``--max-restart-backoff``)."""

    hang_timeout_s: float = HANG_TIMEOUT_S
    max_backoff_s: float = RestartPolicy.max_s
    shm_floor_mb: int = SHM_FLOOR_MB

    def flags(self) -> list[str]:
        """The ``run`` command's flags for these settings."""
        return ["--hang-timeout", str(self.hang_timeout_s), "--max-backoff", str(self.max_backoff_s),
                "--shm-floor-mb", str(self.shm_floor_mb)]


@dataclass(frozen=True)
class Watch:
    """What the supervisor runs and looks at; ``proxy`` is nginx's binary and configuration, or None."""

    command: list[str]
    ready_url: str
    state_file: Path
    shm_prefix: str
    startup_timeout: float = 300
    stop_timeout: float = 20
    metrics_url: str | None = None
    hang_timeout: float = HANG_TIMEOUT_S
    proxy: tuple[Path, Path] | None = None
    restarts: RestartPolicy = RestartPolicy()
    shm_floor_mb: int = SHM_FLOOR_MB


class Supervisor:
    def __init__(self, watch: Watch):
        self.watch = watch
        self.server: subprocess.Popen | None = None
        self.proxy: subprocess.Popen | None = None
        self.proxy_workers: list[process.ProcessId] = []  # nginx's workers, ended with their master
        self.stopping = threading.Event()
        self.state = {"supervisor": process.identify(os.getpid()).to_json(), "server": None, "proxy": None,
                      "shm_prefix": watch.shm_prefix, "ready_url": watch.ready_url, "status": "starting",
                      "restarts": 0, "recoveries": []}

    def _update(self, **changes) -> None:
        self.state.update(changes)
        write_state(self.watch.state_file, self.state)

    def _stop_signal(self, signum, frame) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 1 when the server never became ready or kept failing."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_signal)
        restarts: deque[float] = deque()
        failed_at = None
        self._keep_proxy()
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
                return self._shut_down("failed", self.watch.stop_timeout, code=1)
            failed_at = time.monotonic()
            restarts.append(failed_at)
            while restarts and restarts[0] < failed_at - self.watch.restarts.window_s:
                restarts.popleft()
            delay = self.watch.restarts.delay(len(restarts))
            log.error("%s: restarting the server%s (%d failure(s) within %.0f s)", cause,
                      f" in {delay:.0f} s" if delay else "", len(restarts), self.watch.restarts.window_s)
            self._update(status="restarting", restarts=self.state["restarts"] + 1, last_failure=cause,
                         restart_at=time.time() + delay)
            self._end_server(RESTART_GRACE_S)
            deadline = time.monotonic() + delay
            while not self.stopping.is_set() and time.monotonic() < deadline:
                self._keep_proxy()
                self.stopping.wait(min(POLL_S, max(0.0, deadline - time.monotonic())))
            if self.stopping.is_set():
                break
        return self._shut_down("stopped", self.watch.stop_timeout, code=0)

    def _launch(self) -> None:
        self.server = subprocess.Popen(self.watch.command, stdin=subprocess.DEVNULL, preexec_fn=_large_stack)
        started = process.identify(self.server.pid)  # None when it died at once: _wait_ready says so
        self._update(server=started.to_json() if started else None)

    def _keep_proxy(self) -> None:
        """Start the front door, or start it again when it exited (Triton keeps running meanwhile)."""
        if self.watch.proxy is None:
            return
        if self.proxy is not None and self.proxy.poll() is None:
            if not any(worker.alive() for worker in self.proxy_workers):
                self.proxy_workers = [w for pid in process.children(self.proxy.pid) if (w := process.identify(pid))]
            return
        if self.proxy is not None:
            log.error("the HTTP front door (nginx pid %d) exited with code %s: starting it again",
                      self.proxy.pid, self.proxy.returncode)
            process.end(self.proxy_workers, grace=0)  # a master killed -9 leaves its workers holding the ports
            self.stopping.wait(POLL_S)  # one that dies at once is not restarted in a tight loop
        self.proxy = subprocess.Popen(front_door.command(*self.watch.proxy), stdin=subprocess.DEVNULL)
        self.proxy_workers = []
        started = process.identify(self.proxy.pid)
        self._update(proxy=started.to_json() if started else None)

    def _wait_ready(self) -> str | None:
        """None once ready; else why not."""
        deadline = time.monotonic() + self.watch.startup_timeout
        while not self.stopping.is_set():
            self._reap_orphans()
            self._keep_proxy()
            process.make_regions_private(self.watch.shm_prefix)  # made as each instance loads
            if self.server.poll() is not None:
                return f"tritonserver exited with code {self.server.returncode} while starting"
            if ready(self.watch.ready_url):
                self._check_shared_memory()  # before the state says ready
                return None
            if time.monotonic() > deadline:
                return f"tritonserver was not ready within {self.watch.startup_timeout:.0f} s"
            self.stopping.wait(0.2)
        return None

    def _watch(self) -> str | None:
        """Block until the server or a stub of it dies (returns what happened) or a stop is asked (None)."""
        instances = process.stubs(self.watch.shm_prefix)  # a dead stub's command line is gone: name them now
        stopped_since: dict[int, float] = {}
        progress = Progress(self.watch.metrics_url, self.watch.hang_timeout) if self.watch.metrics_url else None
        while not self.stopping.wait(POLL_S):
            self._reap_orphans()
            self._keep_proxy()
            if self.server.poll() is not None:
                return f"tritonserver (pid {self.server.pid}) exited with code {self.server.returncode}"
            dead = process.dead_stubs(self.server.pid)
            if dead:
                names = ", ".join(f"{instances.get(pid, 'of an unknown instance')} (pid {pid})" for pid in dead)
                return f"the backend process {names} of tritonserver pid {self.server.pid} died"
            now = time.monotonic()
            stopped = [pid for pid in [self.server.pid, *instances] if process.state(pid) in ("T", "t")]
            stopped_since = {pid: stopped_since.get(pid, now) for pid in stopped}
            long_stopped = [pid for pid, since in stopped_since.items() if now - since >= STOPPED_GRACE_S]
            if long_stopped:
                names = ", ".join(f"{instances.get(pid, 'tritonserver')} (pid {pid})" for pid in long_stopped)
                return f"{names} stopped (SIGSTOP or a debugger) and answers nothing"
            hung = progress.hung() if progress is not None else None
            if hung:
                return hung
            self._check_shared_memory()
            if len(instances) < len(process.children(self.server.pid)):
                instances = process.stubs(self.watch.shm_prefix)
                process.make_regions_private(self.watch.shm_prefix)
        return None

    def _check_shared_memory(self) -> None:
        """Not ready (the state, --health, the front door's readiness) while /dev/shm is nearly full."""
        shortage = shm_shortage(self.watch.shm_floor_mb)
        if bool(shortage) == bool(self.state.get("shm_shortage")):
            return
        if shortage:
            log.error("not ready: %s", shortage)
        else:
            log.info("/dev/shm has room again: ready")
        self._update(shm_shortage=shortage)
        if self.watch.proxy is not None:
            front_door.set_not_ready(self.watch.proxy[1], shortage)

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
        ended = process.end_stubs(self.watch.shm_prefix)
        regions = process.remove_shared_memory(self.watch.shm_prefix)
        if ended or regions:
            log.info("ended %d leftover backend process(es), removed %d shared-memory region(s)", ended, len(regions))

    def _shut_down(self, status: str, grace: float, code: int) -> int:
        self._update(status="stopping")
        # The front door first: Triton's shutdown waits for every open HTTP connection, nginx's pooled ones too.
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.send_signal(signal.SIGQUIT)  # nginx's graceful stop: requests in flight finish
            try:
                self.proxy.wait(5)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()
        process.end(self.proxy_workers, grace=0)
        self._end_server(grace)
        if code == 0:
            self.watch.state_file.unlink(missing_ok=True)
        else:
            self._update(status=status, server=None)
        return code


def _large_stack() -> None:
    """In the server's process before it runs: thread stacks of STACK_BYTES (glibc sizes every
    thread's stack from this limit, and takes 2 MB when it is unlimited), within the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    resource.setrlimit(resource.RLIMIT_STACK, (STACK_BYTES if hard == resource.RLIM_INFINITY else min(STACK_BYTES, hard), hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtis.serving.supervisor", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run tritonserver (the command after --) and keep it healthy")
    run.add_argument("--state-file", type=Path, required=True)
    run.add_argument("--ready-url", required=True, help="the server's /v2/health/ready URL")
    run.add_argument("--shm-prefix", required=True, help="the server's --backend-config python shm-region-prefix-name")
    run.add_argument("--startup-timeout", type=float, default=300)
    run.add_argument("--stop-timeout", type=float, default=20)
    run.add_argument("--metrics-url", help="the server's /metrics URL: hung models are seen from its counters")
    run.add_argument("--hang-timeout", type=float, default=HANG_TIMEOUT_S,
                     help="seconds a model may have requests waiting and finish none before the server is restarted")
    run.add_argument("--max-backoff", type=float, default=RestartPolicy.max_s,
                     help="the longest wait between two restarts (it doubles from 1 s after three quick ones)")
    run.add_argument("--shm-floor-mb", type=int, default=SHM_FLOOR_MB,
                     help="free /dev/shm under which the server counts as not ready")
    run.add_argument("--proxy-binary", type=Path, help="nginx, the HTTP front door kept running beside the server")
    run.add_argument("--proxy-conf", type=Path, help="its configuration (trtis.serving.front_door)")
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
    if (args.proxy_binary is None) != (args.proxy_conf is None):
        parser.error("--proxy-binary and --proxy-conf go together")
    return Supervisor(Watch(command, args.ready_url, args.state_file, args.shm_prefix, args.startup_timeout,
                            args.stop_timeout, args.metrics_url, args.hang_timeout,
                            (args.proxy_binary, args.proxy_conf) if args.proxy_binary else None,
                            RestartPolicy(max_s=args.max_backoff), args.shm_floor_mb)).run()


if __name__ == "__main__":
    sys.exit(main())
