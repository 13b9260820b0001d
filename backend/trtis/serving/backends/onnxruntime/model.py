"""Triton backend `onnxruntime` (platform onnxruntime_onnx): an ONNX model in ONNX Runtime.

Threads come from the config's parameters ``intra_op_thread_count`` and
``inter_op_thread_count``, the keys of Triton's own ONNX Runtime backend.
"""
from __future__ import annotations

from pathlib import Path

from trtis.serving.batched_model import BatchedModel, Feed


class TritonPythonModel(BatchedModel):
    def load(self, path: Path, device: str, parameters: dict) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_thread_count", 0))
        options.inter_op_num_threads = int(parameters.get("inter_op_thread_count", 0))
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(device.split(":")[1])}))
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        names = {t.name for t in self.session.get_inputs()} | {t.name for t in self.session.get_outputs()}
        missing = [name for name in [*self.inputs, *self.outputs] if name not in names]
        if missing:
            raise ValueError(f"model {self.name!r}: {path.name} has no tensors {missing} named in config.pbtxt "
                             f"(it has {sorted(names)})")

    def run(self, feed: Feed) -> dict:
        return dict(zip(self.outputs, self.session.run(list(self.outputs), feed)))
