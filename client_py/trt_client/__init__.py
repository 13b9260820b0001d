"""trt_client: the tutorial's client SDK for Triton Inference Server, on gRPC.

``from trt_client import client`` then ``client.Inference(url, model_name, model_version)``;
``trt_client.aio`` is the asyncio form; ``trt_client.errors`` the exceptions.
"""
from trt_client import client, errors

__all__ = ["client", "errors"]
