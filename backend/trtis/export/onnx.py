"""PyTorch -> ONNX -> simplified ONNX, each step checked.

Export with a dynamic batch axis (opset 17 by default), ``onnx.checker`` and shape inference,
then onnx-simplifier. Callers compare each step's outputs with the previous one's on real
inputs (``trtis.verify``), as ``trtis.export`` does.
"""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch


log = logging.getLogger(__name__)
OPSET = 17


def export(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], input_names: Sequence[str],
           output_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
           opset: int = OPSET, batch: bool = True) -> onnx.ModelProto:
    """Export ``module`` (eval mode) with axis 0 of every input and output dynamic ("batch", unless
    ``batch`` is false: a model without one), and the axes of ``dynamic_axes`` besides
    (``{"ids": {1: "sequence"}}``: they add to the batch axis)."""
    batch_axis = {0: "batch"} if batch else {}
    axes = {name: {**batch_axis, **(dynamic_axes or {}).get(name, {})} for name in [*input_names, *output_names]}
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module.eval(), tuple(example_inputs), buffer, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=axes, opset_version=opset, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def run(model: onnx.ModelProto | bytes, feeds: Mapping[str, np.ndarray], threads: int = 0) -> dict[str, np.ndarray]:
    """Run a model with ONNX Runtime on the CPU; outputs by name."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def latency_ms(model: bytes, feeds: Mapping[str, np.ndarray], runs: int = 3) -> float:
    """Median latency of one ONNX Runtime run on this CPU, after a warm-up run (to choose a form)."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    session.run(None, dict(feeds))
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        session.run(None, dict(feeds))
        times.append((time.perf_counter() - began) * 1000)
    return float(np.median(times))


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx-simplifier (constant folding, shape-op elimination); compare the result with the
    input on real data before using it (``trtis.verify``)."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model, check_n=0)
    if not ok:
        raise RuntimeError("onnx-simplifier could not validate the simplified model")
    onnx.checker.check_model(simplified, full_check=True)
    log.info("onnx-simplifier: %d nodes -> %d nodes", len(model.graph.node), len(simplified.graph.node))
    return simplified

