"""Checking a converted model against its source: replay the same inputs through both and
compare every output. Each stage's table row says what was compared and how far apart it was;
a difference over tolerance fails the conversion with the stage named.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np


class VerificationError(RuntimeError):
    """A converted model disagrees with its source beyond tolerance."""


@dataclass(frozen=True)
class Comparison:
    stage: str
    output: str
    max_abs: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tolerance


def compare(stage: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
            tolerance: float | Mapping[str, float], reduce: Callable[[np.ndarray], float] = np.max,
            label: str = "{}") -> list[Comparison]:
    """The largest absolute difference of each output (shapes must agree); ``reduce`` another
    statistic of the differences, with the output named by ``label``."""
    rows = []
    for name, expected in reference.items():
        if name not in candidate:
            raise VerificationError(f"{stage}: the converted model has no output {name!r}")
        actual = np.asarray(candidate[name])
        expected = np.asarray(expected)
        if actual.shape != expected.shape:
            raise VerificationError(f"{stage}: output {name!r} has shape {actual.shape}, the source {expected.shape}")
        limit = tolerance[name] if isinstance(tolerance, Mapping) else tolerance
        diff = float(reduce(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) if actual.size else 0.0
        rows.append(Comparison(stage, label.format(name), diff, float(limit)))
    return rows


def compare_mean(stage: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                 tolerance: float) -> list[Comparison]:
    """The mean absolute difference of each output, for outputs that may differ a lot at a few
    places for a known reason (two JPEG decoders at sharp colour edges) but must agree overall."""
    return compare(stage, reference, candidate, tolerance, np.mean, "{} (mean)")


def within(tolerance: float | Mapping[str, float]) -> Callable[[str, Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                                                         list[Comparison]]:
    """A comparator for ``trtis.export``: every output within ``tolerance`` of its source's."""
    return lambda stage, reference, candidate: compare(stage, reference, candidate, tolerance)


def relative(fraction: float) -> Callable[[str, Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                                          list[Comparison]]:
    """A comparator for reduced precision (INT8, FP16): every output within ``fraction`` of its
    source's largest magnitude. Quantization error scales with an output's range, so one absolute
    limit refuses a large output's small error and passes a small output's large one."""
    def compare_scaled(stage: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]):
        peaks = {name: float(np.max(np.abs(np.asarray(value, np.float64)))) if np.size(value) else 0.0
                 for name, value in reference.items()}
        limits = {name: fraction * max(peak, 1e-6) for name, peak in peaks.items()}
        return compare(stage, reference, candidate, limits, label=f"{{}} (vs {fraction:.0%} of its peak)")
    return compare_scaled


def table(rows: Iterable[Comparison]) -> str:
    """A small text table of comparisons, its columns as wide as their longest entry."""
    rows = list(rows)
    stage = max([len("stage"), *(len(row.stage) for row in rows)])
    output = max([len("output"), *(len(row.output) for row in rows)])
    lines = [f"{'stage':<{stage}} {'output':<{output}} {'max |diff|':>11} {'tolerance':>10}  ok"]
    for row in rows:
        lines.append(f"{row.stage:<{stage}} {row.output:<{output}} {row.max_abs:>11.3g} {row.tolerance:>10.3g}  "
                     f"{'yes' if row.ok else 'NO'}")
    return "\n".join(lines)


def require(rows: Iterable[Comparison]) -> None:
    """Raise naming the stage and output of every comparison over tolerance."""
    failed = [row for row in rows if not row.ok]
    if failed:
        raise VerificationError("; ".join(f"{r.stage}: {r.output} differs by {r.max_abs:.3g} > {r.tolerance:.3g}"
                                          for r in failed))
