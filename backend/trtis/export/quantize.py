"""Calibrated INT8 by explicit quantization: ONNX -> QDQ ONNX with ONNX Runtime's quantize_static.

Two forms of the same calibration:

- ``tensorrt``: what TensorRT consumes to build INT8 plans (implicit INT8 calibration is deprecated
  since TensorRT 10): int8 activations and weights, symmetric (every zero point 0), per-channel
  weight scales, a dedicated Q/DQ pair per consumer. TensorRT fuses Q/DQ with Conv and ReLU.
- ``cpu``: what ONNX Runtime runs fast on x86 CPUs (U8S8): uint8 activations with a zero point,
  which folds each ReLU into the quantization range, and symmetric per-channel int8 weights. With
  symmetric int8 activations ONNX Runtime cannot fuse ``DQ -> Conv -> ReLU -> Q`` and runs those
  convolutions in float between Q/DQ pairs, slower than FP32.

Calibration ranges are cached on disk, keyed by the model, the calibration inputs, the method and
the form, so a re-run is fast.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from tqdm import tqdm

from trtis import quiet

log = logging.getLogger(__name__)

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
FORMS = {
    "tensorrt": {"activation_type": QuantType.QInt8,
                 "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "DedicatedQDQPair": True}},
    "cpu": {"activation_type": QuantType.QUInt8, "extra_options": {"WeightSymmetric": True}},
}
Feed = Mapping[str, np.ndarray]


class FeedReader(CalibrationDataReader):
    """Hands quantize_static the calibration inputs one feed at a time, with a progress bar."""

    def __init__(self, feeds: Sequence[Feed]):
        self.feeds = list(feeds)
        self.rewind()

    def get_next(self) -> dict | None:
        if self.position >= len(self.feeds):
            self.progress.close()
            return None
        feed = dict(self.feeds[self.position])
        self.position += 1
        self.progress.update()
        return feed

    def rewind(self) -> None:
        self.position = 0
        self.progress = tqdm(total=len(self.feeds), desc="calibrating", unit="batch", leave=False)


def _cache_key(model: onnx.ModelProto, feeds: Sequence[Feed], method: str, excluded: Sequence[str], form: str) -> str:
    digest = hashlib.sha256(model.SerializeToString())
    for feed in feeds:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    digest.update(method.encode())
    digest.update(form.encode())
    digest.update(",".join(excluded).encode())
    return digest.hexdigest()[:20]


def output_layers(model: onnx.ModelProto) -> list[str]:
    """The nodes that produce the graph's outputs (a detector's last head convolutions)."""
    outputs = {o.name for o in model.graph.output}
    return [node.name for node in model.graph.node if set(node.output) & outputs]


def quantize_int8(model: onnx.ModelProto, feeds: Sequence[Feed], method: str = "minmax",
                  cache_dir: Path | None = None, nodes_to_exclude: Sequence[str] | None = None,
                  form: str = "tensorrt") -> onnx.ModelProto:
    """A QDQ INT8 model of ``form`` (``tensorrt`` or ``cpu``) calibrated on ``feeds`` (real inputs,
    preprocessed as the server does).

    By default the output layers stay in floating point: quantizing a heatmap's logits to 256
    levels moves scores by up to 0.2 for a negligible share of the arithmetic.
    """
    nodes_to_exclude = output_layers(model) if nodes_to_exclude is None else list(nodes_to_exclude)
    unnamed = [node for node in model.graph.node if not node.name]
    if unnamed:
        raise ValueError(f"{len(unnamed)} nodes have no name; name them so they can be excluded by name")
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {sorted(METHODS)}")
    if not feeds:
        raise ValueError("INT8 calibration needs at least one input batch")
    if form not in FORMS:
        raise ValueError(f"quantization form {form!r} is not one of {sorted(FORMS)}")
    cache = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        key = _cache_key(model, feeds, method, nodes_to_exclude, form)
        cache = Path(cache_dir) / f"calibration-{form}-{method}-{key}.json"
        log.info("Calibration ranges %s %s", "reused from" if cache.exists() else "will be cached in", cache)
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(model, source)
        with quiet.onnxruntime_quantization():
            quantize_static(
                source, target, FeedReader(feeds), quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8,
                per_channel=True, calibrate_method=METHODS[method], nodes_to_exclude=list(nodes_to_exclude),
                calibration_cache_path=cache, **FORMS[form])
        quantized = onnx.load_model(target)
    opset = max(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        raise RuntimeError(f"the QDQ model has opset {opset}; per-channel QDQ needs 13 or newer")
    return quantized


def float_ops(model: onnx.ModelProto) -> list[str]:
    """The compute nodes (Conv, ConvTranspose, Gemm, MatMul) whose weights are not quantized,
    i.e. that still run in floating point."""
    producers = {output: node.op_type for node in model.graph.node for output in node.output}
    return [node.name for node in model.graph.node if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")
            and producers.get(node.input[1]) != "DequantizeLinear"]
