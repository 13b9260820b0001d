"""Comparing two detectors by what they find, for the conversion checks and the served-vs-reference tests.

A converted network's raw heads are compared as detections, because runtimes break ties between equal
scores in different orders, and a reduced-precision network (INT8, FP16) is judged by its heatmap
peaks rather than by every logit.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from detection import pipeline
from detection.postprocess import CenterNetDecoder
from trtis.verify import Comparison, VerificationError

# A reduced-precision network (INT8, FP16) is checked on its heatmap peaks: every FP32 peak scoring
# over 0.3 must have a peak of the same class in the same or a neighbouring heatmap cell (centres
# within 1.5 cells, 6 input pixels) whose score is within 0.25 (INT8 moved the largest score by 0.21
# on the test images). Box sizes are judged by the served mAP (int8_report.py).
REDUCED = {"min_score": 0.3, "score_tolerance": 0.25, "box_tolerance": 1.5 * pipeline.OUTPUT_STRIDE}
BOX_TOLERANCE, SCORE_TOLERANCE = 1e-2, 1e-5  # original-image pixels; sigmoid scores


def compare_detections(stage: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                       box_tolerance: float, score_tolerance: float, min_score: float = 0.0) -> list[Comparison]:
    """Compare two detectors' top-K outputs ([N, K, ...], scores descending) without depending on
    the order of equal scores, which differs between runtimes.

    Each reference detection is matched with the candidate detection of the same class whose score
    is within ``score_tolerance`` and whose box is closest. Rows: the largest box difference of a
    match, the largest score difference of the sorted scores, and the number of reference
    detections without a match (tolerance 0). With ``min_score``, only reference detections scoring
    at least ``min_score + score_tolerance`` must find a match (a quantized model's low scores may
    cross the threshold), and the score row compares matched detections only.
    """
    boxes, scores, classes = pipeline.BOXES, pipeline.SCORES, pipeline.CLASSES
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


def centres(detections: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Detections with each box replaced by its centre (x, y, x, y): where the heatmap peaks are."""
    boxes = detections[pipeline.BOXES]
    middle = (boxes[..., :2] + boxes[..., 2:]) / 2
    return {**detections, pipeline.BOXES: np.concatenate([middle, middle], axis=-1)}


def decoded(heads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A network's heads decoded in network-input pixels (identity meta), to compare two networks
    by what they find."""
    values = [torch.from_numpy(np.asarray(heads[name], np.float32)) for name in pipeline.HEADS]
    batch, size = values[0].shape[0], values[0].shape[-1] * pipeline.OUTPUT_STRIDE
    affine = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(batch, 2, 3)
    with torch.inference_mode():
        out = CenterNetDecoder()(*values, affine, torch.full((batch, 2), float(size)))
    return dict(zip([pipeline.BOXES, pipeline.SCORES, pipeline.CLASSES], (t.numpy() for t in out)))


def same_peaks(stage: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> list[Comparison]:
    """Comparator for reduced-precision networks: the heatmap peaks of ``REDUCED``."""
    return compare_detections(stage, centres(decoded(reference)), centres(decoded(candidate)), **REDUCED)


def same_detections(stage: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> list[Comparison]:
    """Comparator for the postprocess: the same boxes and scores, whatever the order of equal scores."""
    return compare_detections(stage, reference, candidate, BOX_TOLERANCE, SCORE_TOLERANCE)

