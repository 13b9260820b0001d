"""Whether a supervised server is healthy: its readiness, the supervisor's state file, room in
/dev/shm, and ``probe``, the check ``start.sh --health`` and the container's health command run.
Standard library only, so it runs in the official image's Python."""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from trtis.serving import process


def ready(url: str, timeout: float = 2.0) -> bool:
    """Whether the readiness endpoint at ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def read_state(path: Path) -> dict | None:
    """The supervisor's state file at ``path``, or None when there is none (or it is half written)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_state(path: Path, state: dict) -> None:
    """Replace the state file at ``path`` at once, so a reader never sees half of it."""
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(state, indent=1))
    os.replace(scratch, path)


def shm_shortage(floor_mb: int) -> str | None:
    """Why the Python backend cannot take large requests now (/dev/shm nearly full), or None."""
    free = shutil.disk_usage(process.SHM).free
    if free >= floor_mb << 20:
        return None
    return (f"/dev/shm has {free >> 20} MB free, under {floor_mb} MB: the Python backend cannot grow its shared memory, "
            "so larger requests fail; free it, or give the server more (docker --shm-size, the pod's dshm sizeLimit)")


def probe(ready_url: str, state_file: Path | None = None) -> str | None:
    """Why the server is not healthy, or None: it answers ready and none of its stubs is dead.

    With a state file, the server is the one recorded there; without one (inside a container),
    every tritonserver process this machine shows."""
    state = read_state(state_file) if state_file is not None else None
    if state is not None and state.get("supervisor") and not process.ProcessId.from_json(state["supervisor"]).alive():
        return (f"the supervisor (pid {state['supervisor']['pid']}) is not running, so nothing restarts the server "
                "after a fault: ./start.sh --restart")
    if state is not None and state.get("status") == "restarting":
        wait = max(0.0, float(state.get("restart_at", 0)) - time.time())
        return f"the supervisor is restarting the server{f' in {wait:.0f} s' if wait >= 1 else ''}: {state.get('last_failure', '')}"
    if not ready(ready_url):
        return f"the server does not answer ready at {ready_url}"
    if state is not None and state.get("status") != "ready":
        return f"the supervisor reports {state.get('status')}: {state.get('last_failure', '')}".rstrip(": ")
    if state is not None and state.get("shm_shortage"):
        return state["shm_shortage"]
    if state is not None and state.get("server"):
        servers = [process.ProcessId.from_json(state["server"]).pid]
    else:
        servers = process.named("tritonserver")
    for server in servers:
        dead = process.dead_stubs(server)
        if dead:
            return f"backend process(es) {dead} of tritonserver pid {server} died"
    return None
