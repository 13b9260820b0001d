"""Detections from a detector's outputs: ``boxes`` [K, 4], ``scores`` [K] and ``classes`` [K] per
image (with a batch axis in front when the model batches), the names the detection example uses."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trt_client.labels import name_classes

BOXES, SCORES, CLASSES = "boxes", "scores", "classes"


@dataclass(frozen=True)
class Detection:
    class_id: int
    class_name: str  # the index as text when the model names no classes
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 as the model gives them


def is_detection(outputs: Mapping[str, np.ndarray]) -> bool:
    """Whether ``outputs`` hold boxes, scores and classes of matching shapes."""
    if not all(name in outputs for name in (BOXES, SCORES, CLASSES)):
        return False
    scores = np.asarray(outputs[SCORES])
    return (scores.ndim in (1, 2) and np.shape(outputs[BOXES]) == (*scores.shape, 4)
            and np.shape(outputs[CLASSES]) == scores.shape)


def detections(outputs: Mapping[str, np.ndarray], class_names: Sequence[str] | None = None, threshold: float = 0.0,
               top_k: int | None = None, index: int = 0) -> list[Detection]:
    """Image ``index``'s detections scoring at least ``threshold``, best first, at most ``top_k``."""
    if not is_detection(outputs):
        shapes = {name: list(np.shape(outputs[name])) for name in (BOXES, SCORES, CLASSES) if name in outputs}
        raise ValueError(f"not detections: expected outputs {BOXES} [K, 4], {SCORES} [K] and {CLASSES} [K] "
                         f"(with a batch axis in front or not), got {shapes}")
    scores = np.asarray(outputs[SCORES])
    boxes, classes = np.asarray(outputs[BOXES]), np.asarray(outputs[CLASSES])
    if scores.ndim == 2:
        boxes, scores, classes = boxes[index], scores[index], classes[index]
    elif index != 0:
        raise IndexError(f"image {index}: these outputs have no batch axis, so they hold one image")
    kept = np.flatnonzero(scores >= threshold)
    kept = kept[np.argsort(-scores[kept], kind="stable")][:top_k]
    names = name_classes(classes[kept], class_names)
    return [Detection(int(classes[i]), str(name), float(scores[i]), tuple(float(v) for v in boxes[i]))
            for i, name in zip(kept, names)]
