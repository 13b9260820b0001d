"""Checking a converted model against its source: replay the same inputs through both and
compare every output. Each stage's table row says what was compared and how far apart it was;
a difference over tolerance fails the conversion with the stage named.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
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
            tolerance: float | Mapping[str, float]) -> list[Comparison]:
    """The largest absolute difference of each output (shapes must agree)."""
    rows = []
    for name, expected in reference.items():
        if name not in candidate:
            raise VerificationError(f"{stage}: the converted model has no output {name!r}")
        actual = np.asarray(candidate[name])
        expected = np.asarray(expected)
        if actual.shape != expected.shape:
            raise VerificationError(f"{stage}: output {name!r} has shape {actual.shape}, the source {expected.shape}")
        limit = tolerance[name] if isinstance(tolerance, Mapping) else tolerance
        diff = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max()) if actual.size else 0.0
        rows.append(Comparison(stage, name, diff, float(limit)))
    return rows


def compare_detections(stage: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                       box_tolerance: float, score_tolerance: float, boxes: str = "boxes", scores: str = "scores",
                       classes: str = "classes", min_score: float = 0.0) -> list[Comparison]:
    """Compare two detectors' top-K outputs ([N, K, ...], scores descending) without depending on
    the order of equal scores, which differs between runtimes.

    Each reference detection is matched with the candidate detection of the same class whose score
    is within ``score_tolerance`` and whose box is closest. Rows: the largest box difference of a
    match, the largest score difference of the sorted scores, and the number of reference
    detections without a match (tolerance 0). With ``min_score``, only reference detections scoring
    at least ``min_score + score_tolerance`` must find a match (a quantized model's low scores may
    cross the threshold), and the score row compares matched detections only.
    """
    ref_boxes, ref_scores, ref_classes = (np.asarray(reference[k]) for k in (boxes, scores, classes))
    cand_boxes, cand_scores, cand_classes = (np.asarray(candidate[k]) for k in (boxes, scores, classes))
    if ref_scores.shape != cand_scores.shape:
        raise VerificationError(f"{stage}: {scores} has shape {cand_scores.shape}, the source {ref_scores.shape}")
    worst_box, unmatched, score_gap = 0.0, 0, 0.0
    for image in range(ref_scores.shape[0]):
        box_gap = np.abs(ref_boxes[image][:, None, :] - cand_boxes[image][None, :, :]).max(axis=2)
        gaps = np.abs(ref_scores[image][:, None] - cand_scores[image][None, :])
        compatible = (ref_classes[image][:, None] == cand_classes[image][None, :]) & (gaps <= score_tolerance)
        best = np.where(compatible, box_gap, np.inf).argmin(axis=1)
        box_gap = np.where(compatible, box_gap, np.inf).min(axis=1)
        # A near-tie at the K-th place may leave the lowest scores unmatched: those are not errors.
        kth = ref_scores[image].min()
        counted = ~((ref_scores[image] - kth) <= score_tolerance) & (ref_scores[image] >= min_score + score_tolerance)
        unmatched += int(np.sum(~np.isfinite(box_gap) & counted))
        matched = np.isfinite(box_gap) & (ref_scores[image] >= min_score)
        if matched.any():
            worst_box = max(worst_box, float(box_gap[matched].max()))
            score_gap = max(score_gap, float(gaps[np.arange(len(best)), best][matched].max()))
    return [Comparison(stage, boxes, worst_box, box_tolerance), Comparison(stage, scores, score_gap, score_tolerance),
            Comparison(stage, "unmatched", float(unmatched), 0.0)]


def table(rows: Iterable[Comparison]) -> str:
    """A small text table of comparisons."""
    lines = [f"{'stage':<34} {'output':<12} {'max |diff|':>11} {'tolerance':>10}  ok"]
    for row in rows:
        lines.append(f"{row.stage:<34} {row.output:<12} {row.max_abs:>11.3g} {row.tolerance:>10.3g}  "
                     f"{'yes' if row.ok else 'NO'}")
    return "\n".join(lines)


def require(rows: Iterable[Comparison]) -> None:
    """Raise naming the stage and output of every comparison over tolerance."""
    failed = [row for row in rows if not row.ok]
    if failed:
        raise VerificationError("; ".join(f"{r.stage}: {r.output} differs by {r.max_abs:.3g} > {r.tolerance:.3g}"
                                          for r in failed))
