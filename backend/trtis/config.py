"""Triton model configurations, built with the official schema (``model_config_pb2``).

Every ``config.pbtxt`` the project writes comes from here, so field names and enum values are
the server's own and a typo fails in Python, not at load time in the server.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb
from tritonclient.utils import np_to_triton_dtype

ModelConfig = pb.ModelConfig

# The file name Triton looks for in a version folder when the config does not name one.
DEFAULT_MODEL_FILENAME = {
    "tensorflow_graphdef": "model.graphdef",
    "tensorflow_savedmodel": "model.savedmodel",
    "onnxruntime_onnx": "model.onnx",
    "tensorrt_plan": "model.plan",
    "pytorch_libtorch": "model.pt",
    "torch_compile": "model.pt2",  # a backend of this project: a torch.export program, compiled at load
    "python": "model.py",  # a backend, not a platform: the Python backend's model file
}


def triton_dtype(dtype: Any) -> int:
    """Map a numpy, torch, TensorFlow or ONNX data type (or a Triton name) to ``pb.DataType``.

    Accepts ``"TYPE_FP32"``, ``"FP32"``, ``np.float32``, ``torch.float32``, ``tf.float32`` and
    ``onnx.TensorProto.FLOAT``; string types map to ``TYPE_STRING`` (Triton's BYTES).
    """
    if isinstance(dtype, str):
        name = dtype if dtype.startswith("TYPE_") else "TYPE_" + dtype
        name = "TYPE_STRING" if name == "TYPE_BYTES" else name
        if name not in pb.DataType.keys():
            raise ValueError(f"unknown Triton data type {dtype!r}")
        return pb.DataType.Value(name)
    module = type(dtype).__module__.split(".")[0]
    if module == "torch":
        import torch

        if dtype == torch.bfloat16:
            return pb.TYPE_BF16
        dtype = torch.empty((), dtype=dtype).numpy().dtype
    elif module in ("tensorflow", "tf_keras", "keras"):
        dtype = dtype.as_numpy_dtype
    elif isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        import onnx

        dtype = onnx.helper.tensor_dtype_to_np_dtype(int(dtype))
    name = np_to_triton_dtype(np.dtype(dtype))
    if name is None:
        raise ValueError(f"no Triton data type for {dtype!r}")
    return triton_dtype(name)


@dataclass(frozen=True)
class Tensor:
    """One input or output: ``dims`` exclude the batch dimension when the model batches."""

    name: str
    dtype: Any
    dims: Sequence[int]
    reshape: Sequence[int] | None = None
    label_filename: str | None = None


@dataclass(frozen=True)
class Instances:
    """An instance group: ``count`` copies on each of ``gpus`` (all GPUs when empty) or on the CPU."""

    count: int = 1
    kind: str = "cpu"
    gpus: Sequence[int] = ()


@dataclass(frozen=True)
class DynamicBatching:
    """Let the server merge requests into one batch, waiting at most ``max_queue_delay_us``.

    The queue is bounded so that a burst costs memory and time in proportion to the queue, not to
    the burst: a request that finds ``max_queue_size`` others waiting is refused at once
    (UNAVAILABLE over gRPC, 503 over HTTP), and one that waited ``queue_timeout_us`` is refused
    instead of run late (a client may ask for a shorter wait in its request). 0 means unbounded,
    Triton's own default.
    """

    preferred_batch_sizes: Sequence[int] = ()
    max_queue_delay_us: int = 0
    max_queue_size: int = 64
    queue_timeout_us: int = 10_000_000


def _io(message: Any, tensor: Tensor) -> Any:
    message.name = tensor.name
    message.data_type = triton_dtype(tensor.dtype)
    message.dims.extend(int(d) for d in tensor.dims)
    if tensor.reshape is not None:
        message.reshape.shape.extend(int(d) for d in tensor.reshape)
    return message


@dataclass(frozen=True)
class ModelSpec:
    """A model's configuration as typed fields; ``config()`` builds the official protobuf.

    Name the ``platform`` (``onnxruntime_onnx``, ``tensorflow_graphdef``...), not a backend,
    so that the official images use their native backends and the embedded server the
    project's Python-based ones with the same repository. ``warmup_batch_sizes``: the server runs
    every instance once per size, on zeros, before it reports ready (first GPU runs of each shape
    are slow); its zeros have the dims of ``warmup_inputs`` (default ``inputs``), which must be
    concrete where an input's are free (-1): Triton refuses to warm up a variable dimension.
    """

    name: str
    platform: str | None = None
    backend: str | None = None
    max_batch_size: int = 0
    inputs: Sequence[Tensor] = ()
    outputs: Sequence[Tensor] = ()
    instances: Sequence[Instances] = ()
    dynamic_batching: DynamicBatching | None = None
    parameters: Mapping[str, Any] | None = None
    default_model_filename: str | None = None
    warmup_batch_sizes: Sequence[int] = ()
    warmup_inputs: Sequence[Tensor] | None = None

    def config(self) -> ModelConfig:
        """The ``ModelConfig`` message; raises ``ValueError`` naming the model and the field at fault."""
        name = self.name
        if (self.platform is None) == (self.backend is None):
            raise ValueError(f"model {name!r}: give exactly one of platform and backend")
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 0:  # protobuf reads None as 0: no batch axis
            raise ValueError(f"model {name!r}: max_batch_size must be 0 (no batch axis) or more, "
                             f"not {self.max_batch_size!r}")
        config = pb.ModelConfig(name=name, max_batch_size=self.max_batch_size)
        if self.platform:
            config.platform = self.platform
        if self.backend:
            config.backend = self.backend
        if self.default_model_filename:
            config.default_model_filename = self.default_model_filename
        for tensor in self.inputs:
            _io(config.input.add(), tensor)
        for tensor in self.outputs:
            message = _io(config.output.add(), tensor)
            if tensor.label_filename:
                message.label_filename = tensor.label_filename
        for group in self.instances:
            kind = {"cpu": pb.ModelInstanceGroup.KIND_CPU, "gpu": pb.ModelInstanceGroup.KIND_GPU}
            if group.kind.lower() not in kind:
                raise ValueError(f"model {name!r}: instance kind must be 'cpu' or 'gpu', not {group.kind!r}")
            message = config.instance_group.add(count=group.count, kind=kind[group.kind.lower()])
            message.gpus.extend(group.gpus)
        batching = self.dynamic_batching
        if batching is not None:
            config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
            config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
            config.dynamic_batching.default_queue_policy.CopyFrom(pb.ModelQueuePolicy(
                timeout_action=pb.ModelQueuePolicy.REJECT, default_timeout_microseconds=batching.queue_timeout_us,
                allow_timeout_override=True, max_queue_size=batching.max_queue_size))
        for key, value in (self.parameters or {}).items():
            config.parameters[key].string_value = str(value)
        warmed = list(self.inputs if self.warmup_inputs is None else self.warmup_inputs)
        free = [tensor.name for tensor in warmed if -1 in tensor.dims]
        if self.warmup_batch_sizes and free:
            raise ValueError(f"model {name!r}: inputs {free} have free dims (-1), which Triton cannot warm up: give "
                             f"warmup_inputs with concrete dims")
        for size in self.warmup_batch_sizes:
            warmup = config.model_warmup.add(name=f"zeros, batch {size}", batch_size=size, count=1)
            for tensor in warmed:
                warmup.inputs[tensor.name].CopyFrom(pb.ModelWarmup.Input(
                    data_type=triton_dtype(tensor.dtype), dims=[int(d) for d in tensor.dims], zero_data=True))
        return config


def model_config(name: str, **spec: Any) -> ModelConfig:
    """Build a model's configuration in one call: ``spec`` are ``ModelSpec``'s fields."""
    return ModelSpec(name, **spec).config()


# A compiled network's parameter: the batch sizes it runs, each warmed when an instance loads.
BATCH_BUCKETS = "batch_buckets"


def batch_buckets(max_batch_size: int) -> list[int]:
    """The batch sizes a compiled GPU network runs (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, ... and the
    max): a batch is padded to the next, at most 1.5 times its size, and each is warmed at load."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes += [size] if size < 4 else [size, size * 3 // 2]
        size *= 2
    return sorted({s for s in sizes if s < max_batch_size} | {max_batch_size})


# A compiled CPU network's parameter: the batch sizes run once when an instance loads. torch.compile
# makes one graph for a batch of one and one for any other size, so two sizes warm every batch.
WARM_BATCH_SIZES = "warm_batch_sizes"


def warm_batch_sizes(max_batch_size: int) -> str:
    """The WARM_BATCH_SIZES parameter's value for a model of ``max_batch_size``."""
    return ",".join(map(str, sorted({1, min(2, max_batch_size)})))


def batch_buckets_text(max_batch_size: int) -> str:
    """``batch_buckets(max_batch_size)`` as the BATCH_BUCKETS parameter's value."""
    return ",".join(map(str, batch_buckets(max_batch_size)))


# Config parameters of a model with a prepare step (``with_prepare_step``).
PREPARE = "prepare"
PREPARED_INPUTS = "prepared_inputs"


def with_prepare_step(model: ModelConfig, module_file: str, inputs: Sequence[Tensor]) -> ModelConfig:
    """``model`` with a Python step in front of it, in the same process: the server hands the step
    ``inputs`` (e.g. encoded images), and the step's ``prepare(feeds, device, parameters)`` (in
    ``module_file``, beside the model file) returns each request's inputs for the model, or the
    exception that fails that request alone. An optional ``warm_up(device, parameters)`` there runs
    once when an instance loads.

    Why: Triton's ensemble gives each request's next step to any instance of the next model, so
    a tensor made on one GPU may be consumed on another and always crosses processes. A prepare
    step keeps a request's data on its instance's GPU and in its process. The step runs in this
    project's Python-based backends (every model of the embedded server, ``torch_compile``
    everywhere); the official image's native backends do not know it.
    """
    prepared = pb.ModelConfig()
    prepared.CopyFrom(model)
    del prepared.input[:]
    for tensor in inputs:
        _io(prepared.input.add(), tensor)
    prepared.parameters[PREPARE].string_value = module_file
    prepared.parameters[PREPARED_INPUTS].string_value = ",".join(
        f"{t.name}:{pb.DataType.Name(t.data_type)}" for t in model.input)
    # Warm-up requests are zeros of the config's inputs: not what a prepare step reads.
    del prepared.model_warmup[:]
    return prepared


@dataclass
class Step:
    """One model in an ensemble chain.

    ``inputs``/``outputs`` rename the model's tensors to ensemble tensors; a tensor not named
    there keeps its own name, so a chain whose models agree on names needs no mapping at all.
    """

    model: ModelConfig
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    version: int = -1


def ensemble_config(
    name: str,
    steps: Sequence[Step],
    outputs: Sequence[str] | None = None,
    max_batch_size: int | None = None,
) -> ModelConfig:
    """Build an ensemble from a chain of steps.

    The ensemble's inputs are the tensors some step consumes and none produces; its outputs are
    ``outputs`` (default: the tensors some step produces and none consumes). Data types and dims
    come from the step models; ``max_batch_size`` defaults to the smallest of the steps'.
    """
    produced: dict[str, Any] = {}
    consumed: dict[str, Any] = {}
    config = pb.ModelConfig(name=name, platform="ensemble")
    for step in steps:
        message = config.ensemble_scheduling.step.add(model_name=step.model.name, model_version=step.version)
        for tensor in step.model.input:
            ensemble_name = step.inputs.get(tensor.name, tensor.name)
            message.input_map[tensor.name] = ensemble_name
            if ensemble_name not in produced:
                consumed.setdefault(ensemble_name, tensor)
        for tensor in step.model.output:
            ensemble_name = step.outputs.get(tensor.name, tensor.name)
            message.output_map[tensor.name] = ensemble_name
            produced[ensemble_name] = tensor
    if outputs is None:
        used = {name for step in config.ensemble_scheduling.step for name in step.input_map.values()}
        outputs = [t for t in produced if t not in used]
    config.max_batch_size = min(s.model.max_batch_size for s in steps) if max_batch_size is None else max_batch_size
    for tensor_name, source in consumed.items():
        config.input.add(name=tensor_name, data_type=source.data_type, dims=source.dims)
    for tensor_name in outputs:
        if tensor_name not in produced:
            raise ValueError(f"ensemble {name!r}: output {tensor_name!r} is produced by no step")
        source = produced[tensor_name]
        config.output.add(name=tensor_name, data_type=source.data_type, dims=source.dims)
    return config


def with_class_names(model: ModelConfig, names: Sequence[str]) -> ModelConfig:
    """``model`` naming its classes where ``trt_client`` reads them (``Inference.class_names``,
    ``detections()``): the ``class_names`` parameter, a JSON list. The parameter's name is
    ``trt_client.labels.PARAMETER``, so the writer and the reader cannot drift apart."""
    import json

    from trt_client.labels import PARAMETER  # here, not at the top: the backends import this module

    named = pb.ModelConfig()
    named.CopyFrom(model)
    named.parameters[PARAMETER].string_value = json.dumps(list(names))
    return named


def to_text(config: ModelConfig) -> str:
    """The ``config.pbtxt`` text of a configuration."""
    return text_format.MessageToString(config)


def from_text(text: str) -> ModelConfig:
    """Parse ``config.pbtxt`` text; raises ``text_format.ParseError`` naming the line at fault."""
    return text_format.Parse(text, pb.ModelConfig())
