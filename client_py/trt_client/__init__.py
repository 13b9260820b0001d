"""trt_client: the tutorial's client SDK for Triton Inference Server, on gRPC."""
