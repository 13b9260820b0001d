"""ONNX (plain or QDQ INT8) -> a serialized TensorRT engine (``model.plan``).

Written against the TensorRT Python API of 10.x and 11.x: explicit-batch networks parsed from
ONNX, an optimization profile over the batch axis, a timing cache on disk. On 10.x, FP16 is
allowed with a builder flag and INT8 comes from the QDQ nodes (with the INT8 flag set); on 11.x
the builder flags for precision are gone and networks are strongly typed, so the precisions are
the ONNX model's own. A plan runs only on the TensorRT version and GPU it was built on.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a GPU is missing on this host."""


def available() -> str | None:
    """Why TensorRT cannot build here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed (install TensorRT on a GPU host, or choose another format)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
    except ImportError:
        pass
    return None


def build_plan(onnx_model: bytes, input_name: str, input_dims: list[int], max_batch_size: int,
               fp16: bool = True, timing_cache: Path | None = None, workspace_gib: float = 4.0) -> bytes:
    """Build an engine whose batch axis ranges over 1..max_batch_size (optimised for the middle)."""
    reason = available()
    if reason:
        raise TensorRTUnavailable(f"cannot build a TensorRT plan: {reason}")
    import tensorrt as trt

    major = int(trt.__version__.split(".")[0])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if major >= 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif major < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT {trt.__version__} could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if major < 11:
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.INT8)  # takes effect only through the model's QDQ nodes
    profile = builder.create_optimization_profile()
    optimum = max(1, max_batch_size // 2)
    profile.set_shape(input_name, [1, *input_dims], [optimum, *input_dims], [max_batch_size, *input_dims])
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).exists()
                                       else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT {trt.__version__} failed to build the engine (see its log above)")
    if timing_cache:
        Path(timing_cache).write_bytes(memoryview(config.get_timing_cache().serialize()))
    log.info("Built a TensorRT %s plan (batch 1..%d)", trt.__version__, max_batch_size)
    return bytes(serialized)
