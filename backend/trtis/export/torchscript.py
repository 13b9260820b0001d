"""PyTorch -> TorchScript for the ``pytorch_libtorch`` platform: FP16 on a CUDA GPU (for GPU
hosts without TensorRT) or FP32 on the CPU. The FP16 module takes and returns FP32 tensors, so
its config and the ensemble do not change."""
from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence

import torch


class HalfPrecision(torch.nn.Module):
    """Runs ``module`` in FP16: floating inputs cast to half, floating outputs back to float, so the
    config and the ensemble keep FP32 tensors."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module.half()

    def forward(self, *inputs: torch.Tensor):
        outputs = self.module(*(x.half() if x.is_floating_point() else x for x in inputs))
        # A tensor, a tuple, a dict or a ModelOutput alike: every floating tensor back to FP32.
        return torch.utils._pytree.tree_map_only(
            torch.Tensor, lambda out: out.float() if out.is_floating_point() else out, outputs)


def export(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], device: str = "cpu",
           half: bool = False, half_module: Callable[[torch.nn.Module], torch.nn.Module] = HalfPrecision) -> bytes:
    """Trace ``module`` on ``device`` (its FP16 form by ``half_module`` when ``half``, which needs
    CUDA) and serialize it."""
    if half and not device.startswith("cuda"):
        raise ValueError("FP16 TorchScript is for CUDA devices; export FP32 for the CPU")
    module = copy.deepcopy(module).eval().to(device)  # the caller's module stays as it was
    if half:
        module = half_module(module)
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
