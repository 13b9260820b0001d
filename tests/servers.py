"""start.sh as a user runs it, on free ports, for the tests of the command itself.

Everything else starts its server with ``trtis.serving.serve``.
"""
from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trtis.serving.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
START = REPO_ROOT / "start.sh"


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class StartScript:
    """``start.sh`` on one repository, with its own state folder and free ports."""

    repository: Path
    state_dir: Path
    http: int
    grpc: int
    metrics: int

    def start(self, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(START), "--model-repository", str(self.repository), "--state-dir", str(self.state_dir),
             "--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics),
             *extra], capture_output=True, text=True, timeout=timeout)

    def stop(self) -> subprocess.CompletedProcess:
        return subprocess.run([str(START), "--stop", "--state-dir", str(self.state_dir)],
                              capture_output=True, text=True, timeout=120)


def start_script(repository: Path, state_dir: Path) -> StartScript:
    return StartScript(Path(repository), Path(state_dir), free_port(), free_port(), free_port())


def wait_until(condition: Callable[[], object], timeout: float, step: float = 0.1,
               still: Callable[[], bool] = lambda: True) -> float | None:
    """Seconds until ``condition()`` held (tried every ``step``), or None after ``timeout`` or once
    ``still()`` is false."""
    began = time.monotonic()
    while time.monotonic() - began < timeout and still():
        if condition():
            return time.monotonic() - began
        time.sleep(step)
    return None
