"""Triton backend `onnxruntime` (platform onnxruntime_onnx): an ONNX model in ONNX Runtime.

How the model file is run is ``trtis.runtimes.OnnxRuntime``; requests and batching are ``BatchedModel``'s.
"""
from trtis.runtimes import OnnxRuntime
from trtis.serving.batched_model import BatchedModel


class TritonPythonModel(BatchedModel):
    runtime = OnnxRuntime
