"""Starting real embedded Triton servers with start.sh, on free ports, for the tests."""
from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from trtis.serving.launcher import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
START = REPO_ROOT / "start.sh"


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Server:
    """A server started by ``start.sh`` on free ports, with its own state folder."""

    repository: Path
    state_dir: Path
    http: int
    grpc: int
    metrics: int

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http}"

    @property
    def ports(self) -> list[int]:
        return [self.http, self.grpc, self.metrics]

    def start(self, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(START), "--model-repository", str(self.repository), "--state-dir", str(self.state_dir),
             "--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics),
             *extra], capture_output=True, text=True, timeout=timeout)

    def stop(self) -> subprocess.CompletedProcess:
        return subprocess.run([str(START), "--stop", "--state-dir", str(self.state_dir)],
                              capture_output=True, text=True, timeout=120)


def new_server(repository: Path, state_dir: Path) -> Server:
    return Server(Path(repository), Path(state_dir), free_port(), free_port(), free_port())


@contextmanager
def running_server(repository: Path, state_dir: Path) -> Iterator[Server]:
    """Start a server for the duration of the block; fail with the server's own words if it does not start."""
    server = new_server(repository, state_dir)
    started = server.start()
    if started.returncode != 0:
        pytest.fail(f"start.sh failed:\n{started.stdout}\n{started.stderr}")
    try:
        yield server
    finally:
        server.stop()
