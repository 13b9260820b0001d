"""How a server is to run, passed whole (in the manner of pytriton's ``TritonConfig``): where it
listens, how it is locked, which form it takes and how it is supervised.

    serve("model_repository", ServerConfig(timeout=600, supervision=Supervision(hang_timeout_s=30)))
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from trtis.serving.ports import LOOPBACK, Ports
from trtis.serving.security import Security
from trtis.serving.supervisor import Supervision

Mode = Literal["embedded", "docker", "auto"]


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``start``, ``serve`` and the server command lines need besides the repository and
    the state folder.

    ``ports`` None: three free ones, picked at the start (``serve``'s default; start.sh gives
    7000-7002). ``mode``: embedded (the bundled server, CPU, no Docker), docker (the official image
    on the GPUs) or auto. ``security`` may be a function that makes it (and its key files) once the
    start is not refused. ``image`` None: ``docker.image_for`` picks it; ``gpus``: the GPUs a
    container sees. ``use_mps``: under its own CUDA MPS control daemon, embedded mode only.
    ``timeout``: seconds to wait for readiness."""

    host: str = LOOPBACK
    ports: Ports | None = None
    mode: Mode = "embedded"
    security: Security | Callable[[], Security] = Security()
    supervision: Supervision = Supervision()
    timeout: float = 300
    log_verbose: int = 0
    image: str | None = None
    gpus: str = "all"
    use_mps: bool = False

    @property
    def chosen_ports(self) -> Ports:
        """The ports, which a command line needs settled (``start`` settles free ones first)."""
        if self.ports is None:
            raise ValueError("ServerConfig.ports is None (free ports, picked by start()): give Ports(...) here")
        return self.ports
