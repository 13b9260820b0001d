"""A server's three ports, and the addresses a client on this machine reaches them at."""
from __future__ import annotations

import socket
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    """HTTP, gRPC and metrics; the defaults are the tutorial's (start.sh's)."""

    http: int = 7000
    grpc: int = 7001
    metrics: int = 7002

    @classmethod
    def free(cls, host: str = LOOPBACK) -> Ports:
        """Three ports nothing listens on now, so servers can run side by side (tests, sweeps)."""
        return cls(free_port(probe_host(host)), free_port(probe_host(host)), free_port(probe_host(host)))


def probe_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on ``host`` (any address: loopback)."""
    return LOOPBACK if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)


def listening(host: str, port: int) -> bool:
    """Whether something accepts connections on ``port`` of ``host``."""
    try:
        with socket.create_connection((probe_host(host), port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (for servers started side by side: tests, sweeps, baselines)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ready_url(host: str, port: int) -> str:
    """The HTTP readiness endpoint of a server listening on ``host``."""
    return f"http://{probe_host(host)}:{port}/v2/health/ready"
