"""Triton backend `pytorch` (platform pytorch_libtorch): a TorchScript module.

The module is called with the config's inputs as positional arguments, in config order, and
returns a tensor, a tuple in the config's output order, or a dict keyed by output name. It runs
on the GPU the instance group gives it (KIND_GPU) or on the CPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trtis.serving.batched_model import BatchedModel, Feed


class TritonPythonModel(BatchedModel):
    def load(self, path: Path, device: str, parameters: dict) -> None:
        import torch

        strings = [name for name, dtype in self.inputs.items() if dtype == np.object_]
        if strings:
            raise ValueError(f"model {self.name!r}: TorchScript takes no string inputs ({strings})")
        if "intra_op_thread_count" in parameters:
            torch.set_num_threads(int(parameters["intra_op_thread_count"]))
        self.torch = torch
        self.device = torch.device(device)
        self.module = torch.jit.load(str(path), map_location=self.device).eval()

    def run(self, feed: Feed) -> dict:
        torch = self.torch
        # Without the JIT's profiling runs: they made each instance's first calls at every new batch
        # size take about a second, and a conv net gains nothing from its fusions.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            args = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device) for name in self.inputs]
            result = self.module(*args)
        if isinstance(result, dict):
            result = [result[name] for name in self.outputs]
        elif isinstance(result, torch.Tensor):
            result = [result]
        if len(result) != len(self.outputs):
            raise RuntimeError(f"model {self.name!r} returned {len(result)} tensors, config has {len(self.outputs)} outputs")
        return {name: tensor.detach().cpu().numpy() for name, tensor in zip(self.outputs, result)}
