"""The TensorFlow preprocess graph against the OpenCV reference, for every kind of image."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from detection import letterbox, pipeline
from detection.convert import PREPROCESS_TOLERANCE
from detection.preprocess import preprocess_graph
from trtis.export import tensorflow as trtis_tf

SIZE = 128
NAMES = [pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE]


@pytest.fixture(scope="module")
def graph():
    return preprocess_graph(SIZE)


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)


def pil_bytes(array: np.ndarray, mode: str, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array[..., ::-1]).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


IMAGES = {
    "jpeg": lambda: cv2.imencode(".jpg", smooth_image(90, 160))[1].tobytes(),
    "png": lambda: cv2.imencode(".png", smooth_image(200, 120))[1].tobytes(),
    "grayscale png": lambda: cv2.imencode(".png", smooth_image(100, 100)[..., 0])[1].tobytes(),
    "grayscale jpeg": lambda: pil_bytes(smooth_image(64, 96), "L", "JPEG"),
    "rgba png": lambda: pil_bytes(smooth_image(80, 80), "RGBA", "PNG"),
    "cmyk jpeg": lambda: pil_bytes(smooth_image(80, 120), "CMYK", "JPEG"),
    "tiny": lambda: cv2.imencode(".png", smooth_image(3, 2))[1].tobytes(),
    "large": lambda: cv2.imencode(".jpg", smooth_image(1500, 2600))[1].tobytes(),
}


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_tensorflow_graph_matches_the_opencv_reference(graph, kind):
    data = IMAGES[kind]()
    served = trtis_tf.run(graph, {pipeline.RAW_IMAGE: np.array([[data]], dtype=object)}, NAMES)
    reference = letterbox.preprocess(data, SIZE)
    # CMYK: the two libraries convert CMYK to RGB slightly differently (measured 0.02).
    for name, a, b in zip(NAMES, served, reference):
        assert a[0].shape == b.shape
        assert np.abs(a[0] - b).max() <= PREPROCESS_TOLERANCE[name], name
    assert np.abs(served[0][0] - reference[0]).mean() < 0.01


def test_letterbox_keeps_the_aspect_and_pads_with_zero_before_normalising():
    data = cv2.imencode(".png", np.full((50, 100, 3), 255, np.uint8))[1].tobytes()
    image, meta_affine, meta_size = letterbox.preprocess(data, SIZE)
    padding = (0 - letterbox.MEAN_BGR) / letterbox.STD_BGR
    white = (1 - letterbox.MEAN_BGR) / letterbox.STD_BGR
    np.testing.assert_allclose(image[:, 5, 64], padding, atol=1e-5)   # above the image: padding
    np.testing.assert_allclose(image[:, 64, 64], white, atol=1e-5)    # centre: the image
    assert list(meta_size) == [50, 100]
    np.testing.assert_allclose(meta_affine @ [64, 64, 1], [50, 25], atol=1e-4), "input centre -> image centre"


def test_batch_of_different_sizes_in_one_run(graph):
    images = [IMAGES["jpeg"](), IMAGES["png"](), IMAGES["tiny"]()]
    batch = np.array([[d] for d in images], dtype=object)
    image, _, meta_size = trtis_tf.run(graph, {pipeline.RAW_IMAGE: batch}, NAMES)
    assert image.shape == (3, 3, SIZE, SIZE)
    assert meta_size.tolist() == [[90, 160], [200, 120], [3, 2]]


@pytest.mark.parametrize("data, message", [(b"", "empty"), (b"not an image", "Unknown image file format")])
def test_corrupt_images_raise_with_the_problem(graph, data, message):
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        trtis_tf.run(graph, {pipeline.RAW_IMAGE: np.array([[data]], dtype=object)}, NAMES)
    with pytest.raises(ValueError):
        letterbox.preprocess(data, SIZE)
