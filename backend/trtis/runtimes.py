"""The runtimes that run a repository's model files: one adapter per Triton backend name.

The project's Python-based backends serve a model through these adapters, and the in-process
baselines (``trtis.bench``) and conversion checks run the very same code, so a model is never
loaded two different ways. An adapter takes numpy arrays keyed by the config's input names and
returns numpy arrays keyed by its output names. Served on a GPU (``keep_on_device``), the torch
adapters also take CUDA tensors and return their outputs as CUDA tensors, so that a GPU pipeline
hands tensors from model to model without host copies.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtis.config import BATCH_BUCKETS, DEFAULT_MODEL_FILENAME, PREPARED_INPUTS, WARM_BATCH_SIZES, ModelConfig

Feed = Mapping[str, np.ndarray]

# Triton's platform names and the backend that serves each (a Python-based one in the embedded server).
BACKEND_OF_PLATFORM = {"onnxruntime_onnx": "onnxruntime", "tensorflow_graphdef": "tensorflow",
                       "pytorch_libtorch": "pytorch", "tensorrt_plan": "tensorrt"}


class Runtime:
    """A model file loaded for ``device`` ("cpu" or "cuda:N"); ``run`` maps input arrays to outputs."""

    def __init__(self, name: str, path: Path, device: str, parameters: Mapping[str, str],
                 inputs: Mapping[str, np.dtype], outputs: Sequence[str], keep_on_device: bool = False):
        self.name, self.device, self.keep_on_device = name, device, keep_on_device and device != "cpu"
        self.inputs, self.outputs = dict(inputs), list(outputs)
        self.load(Path(path), parameters)

    def load(self, path: Path, parameters: Mapping[str, str]) -> None:
        raise NotImplementedError

    def run(self, feed: Feed) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``load`` took (sessions, device memory)."""

    def _require(self, available: set[str], what: str) -> None:
        missing = [n for n in [*self.inputs, *self.outputs] if n not in available]
        if missing:
            raise ValueError(f"model {self.name!r}: {what} has no tensors {missing} named in config.pbtxt "
                             f"(it has {sorted(available)})")


class OnnxRuntime(Runtime):
    """ONNX Runtime; threads from the config's ``intra_op_thread_count``/``inter_op_thread_count``
    parameters, the keys of Triton's own ONNX Runtime backend."""

    def load(self, path: Path, parameters: Mapping[str, str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_thread_count", 0))
        options.inter_op_num_threads = int(parameters.get("inter_op_thread_count", 0))
        providers: list = ["CPUExecutionProvider"]
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(self.device.split(":")[1])}))
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self._require({t.name for t in self.session.get_inputs()} | {t.name for t in self.session.get_outputs()},
                      path.name)

    def run(self, feed: Feed) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, dict(feed))))


def _tensorflow_cause(message: str) -> str:
    """The line of a TensorFlow error that says what went wrong (it follows a traceback header)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node", "Node:", "[["))]
    cause = causes[-1] if causes else lines[-1]
    if cause.startswith("assertion failed: [") and "]" in cause:  # tf.debugging.assert_*: keep its message
        cause = cause[len("assertion failed: ["):cause.index("]")]
    return cause


class TensorFlowRuntime(Runtime):
    """A frozen GraphDef in a TF1-style session, fed and fetched by the config's names (``<name>:0``)."""

    def load(self, path: Path, parameters: Mapping[str, str]) -> None:
        from trtis import quiet

        tf = quiet.import_tensorflow()
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(path.read_bytes())
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        self._require({node.name for node in graph_def.node}, f"graph {path.name}")
        session_config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=int(parameters.get("intra_op_thread_count", 0)),
            inter_op_parallelism_threads=int(parameters.get("inter_op_thread_count", 0)))
        self.session = tf.compat.v1.Session(graph=graph, config=session_config)
        self.fetches = [f"{name}:0" for name in self.outputs]
        self.op_error = tf.errors.OpError

    def run(self, feed: Feed) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self.fetches, {f"{name}:0": value for name, value in feed.items()})
        except self.op_error as error:
            raise ValueError(f"model {self.name!r}: {_tensorflow_cause(error.message)}") from None
        return dict(zip(self.outputs, values))

    def close(self) -> None:
        self.session.close()


OP_LIBRARIES = "op_libraries"  # config parameter: modules whose import registers a model's custom ops


def import_op_libraries(parameters: Mapping[str, str]) -> None:
    """Load what registers the custom ops a PyTorch model calls: torchvision (``torchvision::nms``,
    ``roi_align``...) whenever it is installed, and each entry of the config's ``op_libraries``
    (comma-separated): a module name, a ``.py`` file or a compiled ``.so`` op library (absolute paths)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        importlib.import_module("torchvision")
    for entry in filter(None, (name.strip() for name in parameters.get(OP_LIBRARIES, "").split(","))):
        try:
            if entry.endswith(".so"):
                import torch

                torch.ops.load_library(entry)
            elif entry.endswith(".py"):
                spec = importlib.util.spec_from_file_location(Path(entry).stem, entry)
                if spec is None or not Path(entry).is_file():
                    raise ImportError(f"no such file {entry}")
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            else:
                importlib.import_module(entry)
        except (ImportError, OSError) as error:
            raise ImportError(f"the config's {OP_LIBRARIES} names {entry!r}, which the server's Python cannot load "
                              f"({error}): install it where the server runs, or give the file's absolute path") from error


class TorchRuntime(Runtime):
    """What the PyTorch adapters share: a callable module, given the config's inputs in config order
    as tensors on the instance's device; it returns a tensor, a tuple in the config's output order,
    or a dict keyed by output name."""

    def load(self, path: Path, parameters: Mapping[str, str]) -> None:
        import torch

        strings = [name for name, dtype in self.inputs.items() if dtype == np.object_]
        if strings:
            raise ValueError(f"model {self.name!r}: a PyTorch model takes no string inputs ({strings})")
        if int(parameters.get("intra_op_thread_count", 0)) > 0:  # 0: torch's default, every core
            torch.set_num_threads(int(parameters["intra_op_thread_count"]))
        self.torch = torch
        import_op_libraries(parameters)
        if self.device.startswith("cuda"):  # the process's kernels and context on its instance's GPU alone
            torch.cuda.set_device(self.device)
        # Small outputs leave as host arrays even on the GPU path: handing a CUDA tensor back costs the
        # Python backend more per request than copying a few KB.
        host = parameters.get("host_outputs", "")
        self.host_outputs = set(self.outputs) if host == "*" else {name for name in host.split(",") if name}
        self.module = self.load_module(path, parameters)

    def load_module(self, path: Path, parameters: Mapping[str, str]):
        raise NotImplementedError

    def call(self, args: list):
        return self.module(*args)

    def run(self, feed: Feed) -> dict:
        torch = self.torch
        with torch.inference_mode():
            args = [value.to(self.device) if isinstance(value, torch.Tensor) else
                    torch.from_numpy(np.ascontiguousarray(value)).to(self.device) for value in
                    (feed[name] for name in self.inputs)]
            result = self.call(args)
        if isinstance(result, dict):
            result = [result[name] for name in self.outputs]
        elif isinstance(result, torch.Tensor):
            result = [result]
        if len(result) != len(self.outputs):
            raise RuntimeError(f"model {self.name!r} returned {len(result)} tensors, config has {len(self.outputs)} outputs")
        return {name: tensor if self.keep_on_device and name not in self.host_outputs else tensor.detach().cpu().numpy()
                for name, tensor in zip(self.outputs, result)}


class TorchScriptRuntime(TorchRuntime):
    """A TorchScript module (``pytorch_libtorch``)."""

    def load_module(self, path: Path, parameters: Mapping[str, str]):
        return self.torch.jit.load(str(path), map_location=self.torch.device(self.device)).eval()

    def call(self, args: list):
        # Without the JIT's profiling runs: they made each instance's first calls at every new batch
        # size take about a second, and a conv net gains nothing from its fusions.
        with self.torch.jit.optimized_execution(False):
            return self.module(*args)


class CompiledRuntime(TorchRuntime):
    """A ``torch.export`` program (``model.pt2``) compiled at load by ``torch.compile`` (inductor,
    dynamic batch), channels-last on a GPU; its precision is the program's own (``trtis.export``
    exports the FP16 form for GPUs). Each instance runs its ``batch_buckets`` (a GPU) or
    ``warm_batch_sizes`` (a CPU) at load, or the exported example's shape where neither is set (a
    model without a batch axis), so no request waits for a compile.

    The inductor cache that ``trtis.export`` shipped beside the model file (``inductor-cache``) seeds
    a writable copy beside the server's state (``$TRTIS_STATE_DIR/inductor-cache/<model>``, kept
    across restarts; a temporary folder without one): the compile ``convert.sh`` ran on this host
    makes every load a warm start, and serving never writes into the repository. A config's
    ``inductor_cache_dir`` is used in place (the export's own). The compiled kernels belong to one
    torch version and one GPU type: build on the serving host."""

    def load_module(self, path: Path, parameters: Mapping[str, str]):
        import locale
        import os

        # The backend stub embeds Python under the C locale, where open() reads ASCII; inductor reads
        # its UTF-8 code templates with the default encoding.
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        self.scratch = None
        if parameters.get("inductor_cache_dir"):
            cache = Path(parameters["inductor_cache_dir"])
        else:
            cache = _writable_cache(path.parent / "inductor-cache", self.name)
            self.scratch = None if os.environ.get("TRTIS_STATE_DIR") else cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)  # one model per backend process
        try:
            return self._compile(path, parameters)
        except BaseException:
            self.close()  # a temporary cache goes with a load that failed
            raise

    def _compile(self, path: Path, parameters: Mapping[str, str]):
        """The program loaded, compiled for this instance's device and warmed (``load_module``'s work)."""
        torch = self.torch
        module = torch.export.load(str(path)).module()
        # The program asserts the device and dtype each .to() saw at export (the CPU, FP32); it is
        # served on any GPU, fed FP16 where its config says so.
        for node in list(module.graph.nodes):
            if node.target is torch.ops.aten._assert_tensor_metadata.default:
                module.graph.erase_node(node)
        module.recompile()
        # Warmed with the dtypes it will be fed (the config's, e.g. FP16 images), not the program's own
        # (FP32 at export): a dtype the warm-up did not see recompiles the graph at the first requests
        # in every instance (on an H100 none finished in the bench's first 13 s).
        # Free axes at the exported example's size (the hint a symbolic size keeps).
        placeholders = [node.meta["val"] for node in module.graph.nodes if node.op == "placeholder"]
        fed = list(self.inputs.values())  # in the order ``run`` passes them
        shapes = [([int(size.node.hint) if isinstance(size, torch.SymInt) else int(size) for size in value.shape],
                   torch.from_numpy(np.empty(0, fed[n])).dtype
                   if n < len(fed) and fed[n] is not None and np.dtype(fed[n]).kind == "f" else value.dtype)
                  for n, value in enumerate(placeholders)]
        module = module.to(self.device)
        self.channels_last = self.device.startswith("cuda")
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = torch.compile(module, dynamic=True, mode=parameters.get("compile_mode") or None)
        self.buckets = _sizes(parameters.get(BATCH_BUCKETS, ""))
        warm = self.buckets or _sizes(parameters.get(WARM_BATCH_SIZES, ""))
        with torch.inference_mode():  # each bucket's first run, now: about 0.7 s each for a conv net on an H100
            for batch in warm or [None]:
                self.call([torch.zeros(shape if batch is None else (batch, *shape[1:]), dtype=dtype, device=self.device)
                           for shape, dtype in shapes])
        if self.channels_last:
            torch.cuda.empty_cache()  # the warm-up's largest batch need not stay reserved at rest
        return self.module

    def call(self, args: list):
        """Runs the batch padded to the next of ``batch_buckets``: every new batch size costs a GPU
        network its first-run set-up (cuDNN plans: 0.6-0.8 s per size measured on an H100), so only
        the buckets' sizes ever run, each warmed at load."""
        count = args[0].shape[0]
        bucket = next((size for size in self.buckets if size >= count), count)
        if bucket > count:
            args = [self.torch.cat([a, a[-1:].expand(bucket - count, *a.shape[1:])]) for a in args]
        if self.channels_last:
            args = [a.contiguous(memory_format=self.torch.channels_last) if a.ndim == 4 else a for a in args]
        result = self.module(*args)
        return result if bucket == count else [r[:count] for r in result]

    def close(self) -> None:
        if self.scratch is not None:
            import shutil

            shutil.rmtree(self.scratch, ignore_errors=True)


def _sizes(text: str) -> list[int]:
    return sorted(int(size) for size in text.split(",") if size)


def _writable_cache(shipped: Path, model: str) -> Path:
    """Where a served compiled model's inductor cache goes: beside the server's state (one per
    model, kept across restarts) or a temporary folder, seeded with the files ``shipped`` has that
    it lacks. Each file lands whole (a copy, then a rename): the model's instances seed it at once."""
    import os
    import shutil
    import tempfile

    state = os.environ.get("TRTIS_STATE_DIR")
    if state:
        cache = Path(state) / "inductor-cache" / model
        cache.mkdir(parents=True, exist_ok=True)
    else:
        cache = Path(tempfile.mkdtemp(prefix=f"trtis-inductor-{model}-"))
    for source in shipped.rglob("*") if shipped.is_dir() else ():
        target = cache / source.relative_to(shipped)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copy2(source, partial)
            os.replace(partial, target)
    return cache


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


class TensorRTRuntime(Runtime):
    """A serialized TensorRT engine, with the TensorRT 10+ API (named I/O tensors,
    ``execute_async_v3``) and cuda-python for device buffers and the stream."""

    def load(self, path: Path, parameters: Mapping[str, str]) -> None:
        try:
            import tensorrt as trt
            self.cudart = _cudart()
        except ImportError as error:
            raise RuntimeError(f"model {self.name!r}: the tensorrt backend needs the TensorRT and cuda-python "
                               f"Python packages and an NVIDIA GPU ({error}); serve the ONNX form instead "
                               "(convert.sh --network-format onnx)") from error
        if not self.device.startswith("cuda"):
            raise RuntimeError(f"model {self.name!r}: a TensorRT plan runs on a GPU; set instance_group kind KIND_GPU")
        self.trt = trt
        _ok(self.cudart.cudaSetDevice(int(self.device.split(":")[1])))
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"model {self.name!r}: TensorRT {trt.__version__} cannot load {path}; a plan runs only "
                               "on the TensorRT version and GPU it was built for: rebuild it on this host")
        self._require({self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}, "the engine")
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

    def run(self, feed: Feed) -> dict[str, np.ndarray]:
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

    def close(self) -> None:
        for pointer, _ in getattr(self, "buffers", {}).values():
            self.cudart.cudaFree(pointer)
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)


RUNTIMES: dict[str, type[Runtime]] = {"onnxruntime": OnnxRuntime, "tensorflow": TensorFlowRuntime,
                                      "pytorch": TorchScriptRuntime, "torch_compile": CompiledRuntime,
                                      "tensorrt": TensorRTRuntime}


def backend_of(config: ModelConfig) -> str:
    """The backend that serves a model: its ``backend``, or the one its ``platform`` implies."""
    return config.backend or BACKEND_OF_PLATFORM.get(config.platform, config.platform)


def model_file(model_dir: Path, config: ModelConfig, version: int | str = 1) -> Path:
    """Where a model's file is: ``<model>/<version>/<default_model_filename or the platform's>``."""
    filename = config.default_model_filename or DEFAULT_MODEL_FILENAME.get(config.platform or config.backend)
    if not filename:
        raise ValueError(f"model {config.name!r}: no model file name for {config.platform or config.backend!r}")
    return Path(model_dir) / str(version) / filename


def numpy_dtype(type_name: str) -> np.dtype:
    """A config's data type name (``TYPE_FP16``) as numpy's."""
    from tritonclient.utils import triton_to_np_dtype

    return np.dtype(triton_to_np_dtype(type_name.removeprefix("TYPE_").replace("STRING", "BYTES")))


def file_inputs(config_inputs: Mapping[str, np.dtype], parameters: Mapping[str, str]) -> dict[str, np.dtype]:
    """What the model file takes: the config's inputs, or what its prepare step makes of them
    (``config.with_prepare_step``)."""
    prepared = parameters.get(PREPARED_INPUTS)
    if not prepared:
        return dict(config_inputs)
    return {name: numpy_dtype(kind) for name, kind in (item.rsplit(":", 1) for item in prepared.split(","))}


def as_dtype(value: Any, dtype: np.dtype) -> Any:
    """``value`` (numpy array or torch tensor) as ``dtype``; a torch tensor stays where it is."""
    if not type(value).__module__.startswith("torch"):
        value = np.asarray(value)
        return value if value.dtype == dtype else value.astype(dtype)
    import torch

    wanted = torch.from_numpy(np.empty(0, dtype)).dtype
    return value if value.dtype == wanted else value.to(wanted)


def typed(feed: Mapping[str, Any], dtypes: Mapping[str, np.dtype]) -> dict[str, Any]:
    """The inputs as a model file takes them (``file_inputs``): a no-op for what Triton hands over,
    a cast for what a prepare step made (FP32 images for an FP16 network)."""
    return {name: as_dtype(feed[name], dtype) for name, dtype in dtypes.items()}


def prepare_step(version_dir: Path, filename: str, device: str,
                 parameters: Mapping[str, str]) -> Callable[[list], list]:
    """The prepare step beside a model file (``config.with_prepare_step``), loaded and warmed up
    (its module's ``warm_up(device, parameters)``, where it has one: first calls on a GPU are slow,
    the detection step's took 0.8 s per instance on an H100). The returned function takes the
    requests' feeds and gives the step's answer for each, checking that there is one per request.

    The files beside the model import as top-level modules, as they do in a Python-backend model:
    the version folder joins ``sys.path`` for good, so in one process the first model's sibling
    module of a name is the one every later step gets."""
    import hashlib
    import importlib.util
    import sys

    path = Path(version_dir) / filename
    if str(version_dir) not in sys.path:
        sys.path.insert(0, str(version_dir))
    # A name of its own, registered before it runs (dataclasses and pickling look modules up there).
    name = f"trtis_prepare_{Path(filename).stem}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise ValueError(f"prepare step {path}: not a Python module (name it .py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if hasattr(module, "warm_up"):
        module.warm_up(device, parameters)
        torch = sys.modules.get("torch")
        if device.startswith("cuda") and torch is not None:
            torch.cuda.empty_cache()  # what the warm-up cached need not stay reserved at rest (120 MiB for 3 on an H100)

    def prepare(feeds: list) -> list:
        prepared = list(module.prepare(feeds, device, parameters))
        if len(prepared) != len(feeds):
            raise RuntimeError(f"prepare step {filename}: {len(prepared)} answers for {len(feeds)} requests")
        return prepared
    return prepare


def load(model_dir: Path, config: ModelConfig, device: str = "cpu", parameters: Mapping[str, str] | None = None,
         version: int | str = 1) -> Runtime:
    """Load a repository's model in this process with the runtime its backend uses."""
    from tritonclient.grpc import model_config_pb2 as pb

    backend = backend_of(config)
    if backend not in RUNTIMES:
        raise ValueError(f"model {config.name!r}: no in-process runtime for backend {backend!r} "
                         f"(there are: {', '.join(RUNTIMES)})")
    path = model_file(model_dir, config, version)
    if not path.exists():
        raise FileNotFoundError(f"model {config.name!r}: model file {path} not found")
    merged = {k: v.string_value for k, v in config.parameters.items()} | dict(parameters or {})
    inputs = file_inputs({t.name: numpy_dtype(pb.DataType.Name(t.data_type)) for t in config.input}, merged)
    return RUNTIMES[backend](config.name, path, device, merged, inputs, [t.name for t in config.output])

