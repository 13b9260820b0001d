"""Triton backend `tensorflow` (platform tensorflow_graphdef): a frozen GraphDef in a TF session.

How the model file is run is ``trtis.runtimes.TensorFlowRuntime``; requests and batching are ``BatchedModel``'s.
"""
from trtis.runtimes import TensorFlowRuntime
from trtis.serving.batched_model import BatchedModel


class TritonPythonModel(BatchedModel):
    runtime = TensorFlowRuntime
