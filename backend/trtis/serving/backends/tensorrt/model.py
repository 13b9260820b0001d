"""Triton backend `tensorrt` (platform tensorrt_plan): a serialized TensorRT engine.

Uses the TensorRT 10+ Python API (named I/O tensors, ``execute_async_v3``) and cuda-python for
device buffers and the stream. Needs TensorRT and an NVIDIA GPU; without them the model fails
to load with a message that says so, and the rest of the repository keeps serving.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trtis.serving.batched_model import BatchedModel, Feed


def _cudart():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def _ok(result):
    """Unpack a cuda-python call's (error, value...) tuple, raising on an error."""
    error, *values = result
    if int(error) != 0:
        raise RuntimeError(f"CUDA error {int(error)}: {_cudart().cudaGetErrorString(error)[1].decode()}")
    return values[0] if len(values) == 1 else values


class TritonPythonModel(BatchedModel):
    def load(self, path: Path, device: str, parameters: dict) -> None:
        try:
            import tensorrt as trt
            self.cudart = _cudart()
        except ImportError as error:
            raise RuntimeError(f"model {self.name!r}: the tensorrt backend needs the TensorRT and cuda-python "
                               f"Python packages and an NVIDIA GPU ({error}); serve the ONNX form instead "
                               "(convert.sh --network-format onnx)") from error
        if not device.startswith("cuda"):
            raise RuntimeError(f"model {self.name!r}: a TensorRT plan runs on a GPU; set instance_group kind KIND_GPU")
        self.trt = trt
        _ok(self.cudart.cudaSetDevice(int(device.split(":")[1])))
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"model {self.name!r}: TensorRT {trt.__version__} cannot load {path}; a plan runs only "
                               "on the TensorRT version and GPU it was built for: rebuild it on this host")
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        missing = [name for name in [*self.inputs, *self.outputs] if name not in names]
        if missing:
            raise ValueError(f"model {self.name!r}: engine has no tensors {missing} (it has {sorted(names)})")
        self.context = self.engine.create_execution_context()
        self.stream = _ok(self.cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, int]] = {}

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _ok(self.cudart.cudaFree(pointer))
            pointer, size = _ok(self.cudart.cudaMalloc(nbytes)), nbytes
            self.buffers[name] = (pointer, size)
        return pointer

    def run(self, feed: Feed) -> dict:
        trt, cudart = self.trt, self.cudart
        for name in self.inputs:
            array = np.ascontiguousarray(feed[name], dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_input_shape(name, array.shape)
            pointer = self._device_buffer(name, max(array.nbytes, 1))
            _ok(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                       cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
            self.context.set_tensor_address(name, pointer)
        results = {}
        for name in self.outputs:
            host = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            pointer = self._device_buffer(name, max(host.nbytes, 1))
            self.context.set_tensor_address(name, pointer)
            results[name] = (host, pointer)
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"model {self.name!r}: TensorRT {trt.__version__} failed to run the engine")
        for host, pointer in results.values():
            _ok(cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes,
                                       cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _ok(cudart.cudaStreamSynchronize(self.stream))
        return {name: host for name, (host, _) in results.items()}

    def finalize(self) -> None:
        for pointer, _ in getattr(self, "buffers", {}).values():
            self.cudart.cudaFree(pointer)
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
