"""The detection ensemble served by the real embedded server, against the in-process pipeline."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from served_repository import INPUT_SIZE, OPENCV_PREPROCESS
from servers import wait_until
from detection import pipeline
from detection.matching import compare_detections
from detection.client import image_files
from trt_client import client
from trt_client.errors import InvalidInput
from trtis import verify

TEST_DATA = Path(__file__).resolve().parents[2] / "example" / "test-data"


def one(data: bytes) -> dict:
    return {pipeline.RAW_IMAGE: np.array([data], dtype=bytes)}


def test_conversion_checked_every_stage(detection_repository):
    _, rows = detection_repository
    stages = {row.stage for row in rows}
    assert {"preprocess: TensorFlow vs OpenCV", f"{pipeline.NETWORK}: PyTorch vs ONNX",
            f"{pipeline.NETWORK}: ONNX vs simplified", f"{pipeline.POSTPROCESS}: PyTorch vs ONNX",
            f"{pipeline.POSTPROCESS}: ONNX vs simplified"} <= stages
    assert all(row.ok for row in rows)


def test_served_detections_equal_the_in_process_pytorch_pipeline(runner, reference):
    images = [p.read_bytes() for p in image_files([TEST_DATA])]
    assert len(images) >= 8
    for data in images:
        served = runner.run(input=one(data))
        expected = reference([data])
        rows = compare_detections("served vs in-process", expected, served, box_tolerance=1.0,
                                         score_tolerance=1e-3)
        verify.require(rows)
        assert served[pipeline.CLASSES].dtype == np.int32
        assert np.all(np.diff(served[pipeline.SCORES][0]) <= 0), "scores come sorted, descending"


def test_a_corrupt_image_among_good_ones_fails_alone(detection_server, reference):
    good = [p.read_bytes() for p in image_files([TEST_DATA])][:5]
    requests = good[:2] + [b"\xff\xd8\xff\xe0 truncated jpeg"] + good[2:]
    with client.Inference(detection_server.grpc_url, pipeline.ENSEMBLE) as runner:
        for index, data in enumerate(requests):
            runner.async_run(input=one(data), input_id=index)
        outcomes = {}
        for _ in requests:
            try:
                index, results = runner.get(timeout=120)
                outcomes[index] = results
            except InvalidInput as error:  # a bad image is the client's error (INVALID_ARGUMENT)
                outcomes[error.input_id] = error
    assert isinstance(outcomes[2], InvalidInput) and "detection-preprocess" in str(outcomes[2])
    for index in (0, 1, 3, 4, 5):
        expected = reference([requests[index]])
        verify.require(compare_detections("batched", expected, outcomes[index], 1.0, 1e-3))


def known_box_image(height: int, width: int, box: tuple[int, int, int, int], gray: bool, fmt: str) -> bytes:
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    image = image[..., 0] if gray else image
    return cv2.imencode(fmt, image)[1].tobytes()


def infer(grpc, model: str, inputs: dict, outputs: list[str]) -> list[np.ndarray]:
    tensors = []
    for name, value in inputs.items():
        tensor = grpcclient.InferInput(name, list(value.shape), "BYTES" if value.dtype == object else "FP32")
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    result = grpc.infer(model, tensors)
    return [result.as_numpy(name) for name in outputs]


@pytest.mark.parametrize("height, width, box, gray, fmt", [
    (480, 640, (100, 50, 300, 200), False, ".png"),
    (300, 200, (20, 150, 180, 290), True, ".png"),
    (24, 40, (4, 6, 30, 20), False, ".png"),          # very small: upscaled 6.4x
    (2000, 3000, (1200, 300, 2100, 1500), True, ".jpg"),  # large: downscaled 11.7x
])
def test_boxes_map_back_to_the_original_pixels(detection_server, height, width, box, gray, fmt):
    """A white box drawn at a known place goes through the served preprocess; a heatmap peak made
    at the box's place in the network input goes through the served postprocess; the box that
    comes back must be the drawn one, in original-image pixels."""
    grpc = grpcclient.InferenceServerClient(detection_server.grpc_url)
    raw = np.array([[known_box_image(height, width, box, gray, fmt)]], dtype=object)
    image, meta_affine, meta_size = infer(grpc, pipeline.PREPROCESS, {pipeline.RAW_IMAGE: raw},
                                          [pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE])
    assert meta_size[0].tolist() == [height, width]
    white = image[0, 0] > 0  # normalised: > 0 where brighter than the mean
    ys, xs = np.nonzero(white)
    # The box's edges in input pixels (pixel centres of the first/last white pixels, +-0.5).
    left, right, top, bottom = xs.min() - 0.5, xs.max() + 0.5, ys.min() - 0.5, ys.max() + 0.5
    out, stride = INPUT_SIZE // pipeline.OUTPUT_STRIDE, pipeline.OUTPUT_STRIDE
    cx, cy = (left + right) / 2 / stride, (top + bottom) / 2 / stride
    hm = np.full((1, 6, out, out), -20.0, np.float32)
    hm[0, 2, int(cy), int(cx)] = 20.0
    wh = np.zeros((1, 2, out, out), np.float32)
    reg = np.zeros((1, 2, out, out), np.float32)
    wh[0, :, int(cy), int(cx)] = [(right - left) / stride, (bottom - top) / stride]
    reg[0, :, int(cy), int(cx)] = [cx - int(cx), cy - int(cy)]
    boxes, scores, classes = infer(grpc, pipeline.POSTPROCESS, {"hm": hm, "wh": wh, "reg": reg,
                                   pipeline.META_AFFINE: meta_affine, pipeline.META_SIZE: meta_size},
                                   [pipeline.BOXES, pipeline.SCORES, pipeline.CLASSES])
    assert classes[0, 0] == 2 and scores[0, 0] > 0.99
    pixel = max(height, width) / INPUT_SIZE  # original pixels per input pixel
    np.testing.assert_allclose(boxes[0, 0], box, atol=1.0 * pixel + 1.0)


def awkward_images() -> dict[str, bytes]:
    """Images a new user tries: wide, tall, with alpha, CMYK, tiny; textured, so peaks land on edges."""
    from io import BytesIO

    from PIL import Image

    rng = np.random.default_rng(7)
    noise = lambda h, w, c=3: cv2.GaussianBlur(rng.integers(0, 256, (h, w, c), dtype=np.uint8), (5, 5), 2)  # noqa: E731
    cmyk = BytesIO()
    Image.fromarray(noise(300, 400, 4), "CMYK").save(cmyk, "JPEG")
    return {"wide": cv2.imencode(".jpg", noise(120, 1600))[1].tobytes(),
            "tall": cv2.imencode(".png", noise(1400, 90))[1].tobytes(),
            "alpha": cv2.imencode(".png", noise(333, 517, 4))[1].tobytes(),
            "cmyk": cmyk.getvalue(),
            "tiny": cv2.imencode(".png", noise(9, 31))[1].tobytes()}


@pytest.mark.parametrize("name", sorted(awkward_images()))
def test_every_box_is_well_formed_and_inside_the_image(runner, name):
    """All top-K boxes, the low-score ones too: x1 <= x2, y1 <= y2, clipped to the original image."""
    data = awkward_images()[name]
    height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
    boxes = runner.run(input=one(data))[pipeline.BOXES][0]
    assert boxes.shape == (pipeline.TOP_K, 4)
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all(), boxes
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all()


def test_the_decoder_never_inverts_a_box_even_for_negative_sizes():
    import torch

    from detection.postprocess import CenterNetDecoder

    generator = torch.Generator().manual_seed(0)
    heads = [torch.randn(2, channels, 32, 32, generator=generator) * 3 for channels in (6, 2, 2)]
    affine = torch.tensor([[2.0, 0.0, -10.0], [0.0, 2.0, 5.0]]).expand(2, 2, 3)
    boxes, _, _ = CenterNetDecoder()(*heads, affine, torch.tensor([[200.0, 300.0]] * 2))
    assert (heads[1] < 0).any(), "the test needs negative sizes"
    assert (boxes[..., 0] <= boxes[..., 2]).all() and (boxes[..., 1] <= boxes[..., 3]).all()


def test_opencv_preprocess_model_matches_the_tensorflow_graph(detection_server):
    grpc = grpcclient.InferenceServerClient(detection_server.grpc_url)
    names = [pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE]
    for path in image_files([TEST_DATA])[:4]:
        raw = np.array([[path.read_bytes()]], dtype=object)
        tensorflow = infer(grpc, pipeline.PREPROCESS, {pipeline.RAW_IMAGE: raw}, names)
        opencv = infer(grpc, OPENCV_PREPROCESS, {pipeline.RAW_IMAGE: raw}, names)
        assert np.abs(tensorflow[0] - opencv[0]).max() <= 0.12  # OpenCV's fixed-point warp, as in convert
        np.testing.assert_allclose(tensorflow[1], opencv[1], atol=1e-4)
        np.testing.assert_array_equal(tensorflow[2], opencv[2])
    with pytest.raises(Exception, match="cannot decode"):
        infer(grpc, OPENCV_PREPROCESS, {pipeline.RAW_IMAGE: np.array([[b"junk"]], dtype=object)}, names)


def test_concurrent_requests_are_batched_by_every_step(detection_server):
    grpc = grpcclient.InferenceServerClient(detection_server.grpc_url)
    before = grpc.get_inference_statistics(pipeline.NETWORK, as_json=True)["model_stats"][0]
    data = image_files([TEST_DATA])[0].read_bytes()
    done = threading.Semaphore(0)
    errors = []
    raw = np.array([[data]], dtype=object)
    for _ in range(16):
        tensor = grpcclient.InferInput(pipeline.RAW_IMAGE, [1, 1], "BYTES")
        tensor.set_data_from_numpy(raw)
        grpc.async_infer(pipeline.ENSEMBLE, [tensor], lambda result, error: (errors.append(error), done.release()))
    for _ in range(16):
        assert done.acquire(timeout=120)
    assert errors == [None] * 16

    def counts() -> tuple[int, int]:
        after = grpc.get_inference_statistics(pipeline.NETWORK, as_json=True)["model_stats"][0]
        return (int(after["inference_count"]) - int(before.get("inference_count", 0)),
                int(after["execution_count"]) - int(before.get("execution_count", 0)))

    # A Python model's statistics are recorded after its execute returns, which on a busy machine can
    # be after the ensemble has answered (9 of 16 were counted once, in a full local run).
    wait_until(lambda: counts()[0] >= 16, 10)
    inferences, executions = counts()
    assert inferences == 16 and executions < 16
