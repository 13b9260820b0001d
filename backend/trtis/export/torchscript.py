"""PyTorch -> TorchScript for the ``pytorch_libtorch`` platform: FP16 on a CUDA GPU (for GPU
hosts without TensorRT) or FP32 on the CPU. The FP16 module takes and returns FP32 tensors, so
its config and the ensemble do not change."""
from __future__ import annotations

import copy
import io
from collections.abc import Sequence

import torch


class HalfPrecision(torch.nn.Module):
    """Runs ``module`` in FP16: inputs cast to half, floating outputs back to float."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module.half()

    def forward(self, x: torch.Tensor):
        return tuple(out.float() for out in self.module(x.half()))


def export(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], device: str = "cpu",
           half: bool = False) -> bytes:
    """Trace ``module`` on ``device`` (FP16 when ``half``, which needs CUDA) and serialize it."""
    if half and not device.startswith("cuda"):
        raise ValueError("FP16 TorchScript is for CUDA devices; export FP32 for the CPU")
    module = copy.deepcopy(module).eval().to(device)  # the caller's module stays as it was
    if half:
        module = HalfPrecision(module)
    inputs = tuple(t.to(device) for t in example_inputs)
    with torch.inference_mode():
        traced = torch.jit.trace(module, inputs, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def run(data: bytes, inputs: Sequence[torch.Tensor], device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """Load a serialized module and run it (to check it against its source)."""
    module = torch.jit.load(io.BytesIO(data), map_location=device)
    with torch.inference_mode():
        outputs = module(*(t.to(device) for t in inputs))
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
