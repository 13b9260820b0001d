"""Triton backend `pytorch` (platform pytorch_libtorch): a TorchScript module.

How the model file is run is ``trtis.runtimes.TorchScriptRuntime``; requests and batching are ``BatchedModel``'s.
"""
from trtis.runtimes import TorchScriptRuntime
from trtis.serving.batched_model import BatchedModel


class TritonPythonModel(BatchedModel):
    runtime = TorchScriptRuntime
