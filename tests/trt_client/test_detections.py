"""Detections picked from detector-shaped outputs: best first, above a threshold, at most top_k."""
from __future__ import annotations

import numpy as np
import pytest

from trt_client.detections import Detection, detections, is_detection

OUTPUTS = {"boxes": np.arange(12, dtype=np.float32).reshape(1, 3, 4),
           "scores": np.array([[0.2, 0.9, 0.5]], np.float32), "classes": np.array([[0, 1, 5]], np.int32)}


def test_best_first_above_the_threshold_with_names():
    assert detections(OUTPUTS, ["cat", "dog"], threshold=0.3) == [
        Detection(1, "dog", pytest.approx(0.9), (4.0, 5.0, 6.0, 7.0)),
        Detection(5, "5", pytest.approx(0.5), (8.0, 9.0, 10.0, 11.0))]
    assert [d.class_id for d in detections(OUTPUTS, top_k=1)] == [1]


def test_outputs_without_a_batch_axis_hold_one_image():
    one = {name: value[0] for name, value in OUTPUTS.items()}
    assert detections(one) == detections(OUTPUTS)
    with pytest.raises(IndexError, match="no batch axis"):
        detections(one, index=1)


def test_outputs_that_are_not_detections_are_refused():
    assert not is_detection({"scores": OUTPUTS["scores"]})
    mismatched = {**OUTPUTS, "boxes": OUTPUTS["boxes"][:, :2]}
    assert not is_detection(mismatched)
    with pytest.raises(ValueError, match=r"not detections.*'boxes': \[1, 2, 4\]"):
        detections(mismatched)
