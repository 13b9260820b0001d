"""A server's state folder: its files, the lock on it, which processes its files prove are ours,
and stopping those (and only those).

A pid alone names nobody for long, so ``--stop`` signals only the processes the state file proves
are the ones it started (pid, start time, executable), then ends that server's backend processes
and removes its shared memory; a stale file is reported and removed.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from trtis.serving import docker, mps, process
from trtis.serving.health import probe, read_state
from trtis.serving.ports import Ports, ready_url

log = logging.getLogger(__name__)

STATE_FILE = "server.json"  # the supervisor's: its processes, status and restarts
PORTS_FILE = "ports.json"  # the host and ports the server was started on, for the clients of this machine
PID_FILE = "tritonserver.pid"  # a bare pid, as earlier launchers and hand-run servers leave it
CONTAINER_FILE = "tritonserver.container"
LOG_FILE = "tritonserver.log"
ADMIN_KEY_FILE = "admin.key"
LOCK_FILE = "server.lock"


class LaunchError(RuntimeError):
    """The server did not start or stop as asked."""


def claim(state_dir: Path) -> int:
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


def state(state_dir: Path) -> dict | None:
    """The supervisor's state file of ``state_dir``, or None."""
    return read_state(Path(state_dir) / STATE_FILE)


def record_ports(state_dir: Path, host: str, ports: Ports) -> None:
    """Say where the started server listens (``trtis.bench`` finds its metrics endpoint here)."""
    (Path(state_dir) / PORTS_FILE).write_text(json.dumps({"host": host, **vars(ports)}))


def recorded_ports(state_dir: Path) -> tuple[str, Ports] | None:
    """The host and ports ``record_ports`` wrote, or None (no server started from there)."""
    try:
        recorded = json.loads((Path(state_dir) / PORTS_FILE).read_text())
        return recorded["host"], Ports(recorded["http"], recorded["grpc"], recorded["metrics"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _recorded(state_dir: Path) -> dict[str, process.ProcessId]:
    """The live supervisor and server the state file records, only where they are provably those
    (same pid, start time, boot and executable, and the expected program)."""
    recorded_state = state(state_dir) or {}
    ours = {}
    for role, program in (("supervisor", "trtis.serving.supervisor"), ("server", "tritonserver"), ("proxy", "nginx")):
        recorded = process.ProcessId.from_json(recorded_state[role]) if recorded_state.get(role) else None
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
    named = process.identify(pid)
    began = process.started_at(pid)
    if named is None or began is None or Path(named.exe).name != "tritonserver":
        return None
    return named if began <= pid_file.stat().st_mtime + 1 else None


def _describe(pid_text: str) -> str:
    try:
        now = process.identify(int(pid_text))
    except ValueError:
        return f"{pid_text!r} is not a pid"
    if now is None:
        return f"pid {pid_text} is not running"
    return f"pid {pid_text} is now another process ({now.exe or 'not ours to inspect'})"


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
        recorded_state, ours = state(state_dir) or {}, _recorded(state_dir)
        was_running = was_running or bool(set(ours) - {"proxy"})
        if not was_running and not after_failed_start:
            pid = str((recorded_state.get("supervisor") or {}).get("pid", "?"))
            log.warning("stale state file %s: the server it records is not running (%s); removed it, "
                        "signalled nothing", state_file, _describe(pid))
        # The supervisor stops its server itself; whatever is left after that gets the same treatment.
        process.end([ours[role] for role in ("supervisor",) if role in ours], grace=timeout)
        process.end([ours[role] for role in ("server", "proxy") if role in ours], grace=timeout)
        shm_prefix = recorded_state.get("shm_prefix")
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
    (state_dir / PORTS_FILE).unlink(missing_ok=True)
    mps.stop(state_dir)  # after the server: its processes are MPS clients
    return was_running


def health(state_dir: Path, host: str, http_port: int) -> str | None:
    """Why the server started from ``state_dir`` is unhealthy, or None (``start.sh --health``). It
    asks the address the server was started on, where the folder recorded it, else ``host:http_port``."""
    recorded = recorded_ports(state_dir)
    if recorded is not None:
        host, http_port = recorded[0], recorded[1].http
    container_file = Path(state_dir) / CONTAINER_FILE
    if container_file.exists():
        return docker.probe(container_file.read_text().strip())
    if not running(state_dir):
        return f"no server is running from {state_dir}"
    return probe(ready_url(host, http_port), Path(state_dir) / STATE_FILE)
