"""What a measurement is asked to do, passed whole instead of a score of arguments: the served
model (``Target``), what is sent to it (``Load``), what the figures are judged against
(``Baselines``) and how the report names them (``Titles``).

    target = Target(server.grpc_url, "my-model", metrics_url=server.metrics_url)
    found = benchmark(target, Load(requests, [1, 2, 4], seconds=5), Baselines("model_repository"))
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time these would import the runtimes with the package
    from trtis.bench.in_process import StepFunction
    from trtis.bench.inputs import Request
    from trtis.bench.report import Column


@dataclass(frozen=True)
class Target:
    """The served model: its server's gRPC address and the model's name; the server's metrics
    endpoint (for GPU figures) and the headers every call carries (the keys of a locked server)."""

    url: str
    model: str
    metrics_url: str | None = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Load:
    """What is sent: ``requests`` round-robin, at each of ``levels`` requests in flight per client,
    from ``clients`` clients (processes when more than one), measured for ``seconds`` after ``warmup``."""

    requests: Sequence[Request]
    levels: Sequence[int]
    seconds: float = 20
    warmup: float = 5
    clients: int = 1

    def __post_init__(self):
        if not self.requests:
            raise ValueError("no requests to send")
        if any(level < 1 for level in self.levels) or self.clients < 1 or self.seconds <= 0 or self.warmup < 0:
            raise ValueError(f"levels and clients must be at least 1, seconds positive and warm-up not negative "
                             f"(got {list(self.levels)}, {self.clients}, {self.seconds}, {self.warmup})")

    def at(self, levels: Sequence[int]) -> Load:
        """The same load at other levels."""
        return replace(self, levels=list(levels))


@dataclass(frozen=True)
class Baselines:
    """What the served figures are judged against, measured from ``repository`` with its own
    runtimes (``overrides`` replace a model's step): the model in process, ``alone`` (one composing
    model) per batch size of ``batches``, and a naive Flask server (on ``naive_port``, 0: any free
    one) up to ``naive_concurrency``; or taken from an ``earlier`` report of the same machine.
    Neither: none. ``batches`` None: 1 and 8 where ``alone`` runs on the CPU, 1 to 64 on a GPU."""

    repository: Path | str | None = None
    overrides: Mapping[str, StepFunction] | None = None
    alone: str | None = None
    batches: Sequence[int] | None = None
    naive: bool = True
    naive_port: int = 0
    naive_concurrency: int = 16
    earlier: Mapping | None = None


@dataclass(frozen=True)
class Titles:
    """How the report names what it measured: the machine (default: architecture and cores), the
    requests' source, the subject (default: "Model <name>"), the extra Triton columns of its table,
    and the command that measures another machine."""

    device: str | None = None
    source: str = ""
    subject: str | None = None
    columns: Sequence[Column] | None = None
    reproduce: str | None = None
