"""Triton backend `torch_compile` (this project's): a ``torch.export`` program compiled at load.

How the model file is run is ``trtis.runtimes.CompiledRuntime``; requests and batching are ``BatchedModel``'s.
"""
from trtis.runtimes import CompiledRuntime
from trtis.serving.batched_model import BatchedModel


class TritonPythonModel(BatchedModel):
    runtime = CompiledRuntime
