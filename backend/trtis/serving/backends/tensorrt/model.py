"""Triton backend `tensorrt` (platform tensorrt_plan): a serialized TensorRT engine.

Needs TensorRT, cuda-python and an NVIDIA GPU; without them the model fails to load with a
message that says so, and the rest of the repository keeps serving.

How the model file is run is ``trtis.runtimes.TensorRTRuntime``; requests and batching are ``BatchedModel``'s.
"""
from trtis.runtimes import TensorRTRuntime
from trtis.serving.batched_model import BatchedModel


class TritonPythonModel(BatchedModel):
    runtime = TensorRTRuntime
