"""trtis: turn TensorFlow, PyTorch and ONNX models into a Triton model repository, and serve it."""

__version__ = "0.1.0"
