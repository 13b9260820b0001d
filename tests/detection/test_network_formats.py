"""The network's formats: calibrated INT8 (QDQ), TorchScript, TensorRT; each served in the full ensemble."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from served_repository import INPUT_SIZE
from detection import dataset, pipeline
from detection.convert import DEFAULT_CHECKPOINT, Options, calibration_feeds, convert
from detection.matching import REDUCED, centres, compare_detections, decoded
from detection.preprocess import TensorFlowPreprocess
from trtis.serving import serve
from trt_client import client
from trtis import verify
from trtis.export import onnx as trtis_onnx
from trtis.export import quantize, tensorrt

ROOT = Path(__file__).resolve().parents[2]
SIZE = INPUT_SIZE


@pytest.fixture(scope="module")
def fp32(network):
    example = torch.zeros(1, 3, SIZE, SIZE)
    exported = trtis_onnx.export(network, [example], [pipeline.IMAGE], list(pipeline.HEADS))
    return trtis_onnx.simplify(exported)


@pytest.fixture(scope="module")
def int8(fp32, tmp_path_factory):
    """The TensorRT form (symmetric int8 QDQ)."""
    options = Options(Path("unused"), input_size=SIZE, calibration_images=32)
    cache = tmp_path_factory.mktemp("calibration")
    model = quantize.quantize_int8(fp32, calibration_feeds(options), "minmax", cache, form="tensorrt")
    return model, cache, options


def test_qdq_model_quantizes_every_convolution_symmetric_and_per_channel(int8, fp32):
    model, _, _ = int8
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    heads = quantize.output_layers(fp32)
    assert sorted(quantize.float_ops(model)) == sorted(heads) == ["/hm/hm.2/Conv", "/reg/reg.2/Conv", "/wh/wh.2/Conv"]
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convolutions = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose") and n.name not in heads]
    assert len(convolutions) > 30
    for node in convolutions:
        assert producers[node.input[0]].op_type == "DequantizeLinear", f"{node.name}: INT8 activations"
        weight = producers[node.input[1]]
        assert weight.op_type == "DequantizeLinear", node.name
        assert initializers[weight.input[0]].dtype == np.int8, "weights stored as int8"
        scale = initializers[weight.input[1]]
        assert scale.ndim == 1 and scale.size > 1 or node.op_type == "ConvTranspose", f"{node.name}: per-channel"
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = initializers[node.input[2]]
            assert zero.dtype in (np.int8, np.int32), f"{node.name}: int8 (int32 for biases)"
            assert not zero.any(), f"{node.name}: zero point must be 0 (symmetric)"


def test_calibration_ranges_are_cached_and_reused(int8, fp32):
    model, cache, options = int8
    cached = sorted(cache.glob("calibration-tensorrt-minmax-*.json"))
    assert len(cached) == 1
    again = quantize.quantize_int8(fp32, calibration_feeds(options), "minmax", cache, form="tensorrt")
    assert sorted(cache.glob("*.json")) == cached and again.SerializeToString() == model.SerializeToString()
    with pytest.raises(ValueError, match="not one of"):
        quantize.quantize_int8(fp32, calibration_feeds(options), "kl", cache)


@pytest.mark.parametrize("form", ["tensorrt", "cpu"])
def test_int8_finds_what_fp32_finds_on_held_out_images(int8, fp32, form):
    """Held out: calibration used the validation split (seed 2); these are test images (seed 3).
    Tolerance (REDUCED): every FP32 heatmap peak over 0.3 has an INT8 peak of the same class in the
    same or a neighbouring heatmap cell (centres within 6 input pixels), its score within 0.25."""
    model, cache, options = int8
    if form == "cpu":
        model = quantize.quantize_int8(fp32, calibration_feeds(options), "minmax", cache, form="cpu")
        assert sorted(quantize.float_ops(model)) == sorted(quantize.output_layers(fp32))
    images = [dataset.generate(dataset.SPLIT_SEEDS["test"], i).jpeg for i in range(8)]
    feed = {pipeline.IMAGE: TensorFlowPreprocess(SIZE)(images)[0]}
    reference = centres(decoded(trtis_onnx.run(fp32, feed)))
    candidate = centres(decoded(trtis_onnx.run(model, feed)))
    assert (reference[pipeline.SCORES] > 0.3).sum() >= 8, "the held-out images have detections to compare"
    verify.require(compare_detections(f"FP32 vs INT8 ({form} form)", reference, candidate, **REDUCED))


def served_detections(url: str, images: list[bytes]) -> list[dict]:
    with client.Inference(url, pipeline.ENSEMBLE, "1") as runner:
        return [runner.run(input={pipeline.RAW_IMAGE: np.array([data], dtype=bytes)}) for data in images]


@pytest.mark.parametrize("network_format", ["onnx-int8", "torchscript"])
def test_each_format_serves_the_ensemble_with_the_in_process_detections(network_format, reference, tmp_path):
    convert(Options(tmp_path / "repo", DEFAULT_CHECKPOINT, input_size=INPUT_SIZE, network_format=network_format,
                    calibration_images=16, calibration_cache=tmp_path / "cache"))
    samples = [dataset.generate(dataset.SPLIT_SEEDS["test"], i) for i in range(4)]
    images = [sample.jpeg for sample in samples]
    with serve(tmp_path / "repo") as server:
        served = served_detections(server.grpc_url, images)
    for sample, data, outputs in zip(samples, images, served):
        expected = reference([data])
        if network_format == "torchscript":  # FP32 on this CPU: the same numbers
            rows = compare_detections(network_format, expected, outputs, box_tolerance=1.0, score_tolerance=1e-3)
        else:  # peak centres in original pixels: one heatmap cell scaled back to the image
            scale = max(sample.image.shape[:2]) / INPUT_SIZE
            rows = compare_detections(network_format, centres(expected), centres(outputs),
                                             min_score=REDUCED["min_score"], score_tolerance=REDUCED["score_tolerance"],
                                             box_tolerance=REDUCED["box_tolerance"] * scale)
        verify.require(rows)


def test_tensorrt_says_why_it_cannot_build_here(tmp_path):
    reason = tensorrt.available()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: the build test below runs instead")
    with pytest.raises(tensorrt.TensorRTUnavailable, match=reason.split(" (")[0]):
        tensorrt.build_plan(b"", pipeline.IMAGE, [3, SIZE, SIZE], 4)
    run = subprocess.run([str(ROOT / "example" / "detection" / "convert.sh"), "--network-format", "tensorrt",
                          "--input-size", "128", "--output", str(tmp_path), "--calibration-images", "8"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and "the tensorrt format cannot be built here" in run.stderr
    assert "Traceback" not in run.stderr


def test_tensorrt_plan_builds_and_runs(fp32, int8, tmp_path):
    reason = tensorrt.available()
    if reason is not None:
        pytest.skip(f"needs TensorRT and an NVIDIA GPU: {reason}")
    model, _, _ = int8
    plan = tensorrt.build_plan(model.SerializeToString(), pipeline.IMAGE, [3, SIZE, SIZE], 4,
                               timing_cache=tmp_path / "timing.cache")
    assert len(plan) > 1_000_000 and (tmp_path / "timing.cache").exists()


def test_auto_picks_a_format_and_says_why(tmp_path):
    run = subprocess.run([str(ROOT / "example" / "detection" / "convert.sh"), "--network-format", "auto",
                          "--input-size", "128", "--output", str(tmp_path / "repo"), "--calibration-images", "8"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith(f"{pipeline.NETWORK}: auto: "))
    assert "tensorrt" in line or ("in INT8" in line and "in FP32" in line)
    onnx.checker.check_model(str(tmp_path / "repo" / pipeline.NETWORK / "1" / "model.onnx"))
