"""The part every Python-based backend of the project shares.

Triton hands a Python model a list of requests. This base class runs them as one batch where
the model batches and their shapes allow, splits the outputs back per request, checks outputs
against the config, and, when a batch fails, reruns its requests one by one so that only the
bad request gets an error and the others still succeed. On the CPU, a model's instances share the
cores unless the config's ``intra_op_thread_count`` says otherwise.

Tensors travel as numpy arrays on the CPU path and as torch CUDA tensors on the GPU path: an input
Triton hands over in GPU memory (a model whose config says ``FORCE_CPU_ONLY_INPUT_TENSORS: no``)
arrives through DLPack without a copy, and a CUDA output leaves the same way, so a GPU pipeline
never round-trips through host memory. Batching, splitting and the checks are the same on both.

A model with a prepare step (``trtis.config.with_prepare_step``) first hands every request's inputs
to the step's ``prepare`` in this process; a request the step refuses fails alone, and the others
run together as above, on this instance's device.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from trtis.config import PREPARE, ModelConfig
from trtis.runtimes import Runtime, as_dtype, file_inputs, model_file, prepare_step, typed

Feed = dict[str, Any]  # numpy arrays, or torch tensors on the GPU path


def _is_array(value: Any) -> bool:
    """Whether ``value`` is host data (numpy), not a torch tensor."""
    return not type(value).__module__.startswith("torch")


def _concatenate(values: list, device: str) -> Any:
    """One batch of the requests' values; GPU tensors are gathered on the instance's ``device``: in an
    ensemble spread over several GPUs a request's tensor may come from another card."""
    if all(_is_array(v) for v in values):
        return np.concatenate(values)
    import torch

    return torch.cat([torch.from_numpy(v).to(device) if _is_array(v) else v.to(device) for v in values])


def _split(value: Any, sizes: list[int]) -> list:
    if _is_array(value):
        return np.split(value, np.cumsum(sizes)[:-1])
    return list(value.split(sizes))


def _input(tensor) -> Any:
    if tensor.is_cpu():
        return tensor.as_numpy()
    from torch.utils.dlpack import from_dlpack

    return from_dlpack(tensor.to_dlpack())


def _output(name: str, value: Any):
    if _is_array(value):
        return pb_utils.Tensor(name, value)
    if value.is_cuda:
        from torch.utils.dlpack import to_dlpack

        return pb_utils.Tensor.from_dlpack(name, to_dlpack(value.contiguous()))
    return pb_utils.Tensor(name, value.numpy())


class BatchedModel:
    """Subclasses name their ``runtime`` (a ``trtis.runtimes.Runtime``); everything about requests
    lives here."""

    runtime: type[Runtime]

    def run(self, feed: Feed) -> Mapping[str, Any]:
        return self.model.run(feed)

    def finalize(self) -> None:
        if hasattr(self, "model"):
            self.model.close()

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.inputs = {t["name"]: pb_utils.triton_string_to_numpy(t["data_type"]) for t in config["input"]}
        self.outputs = {t["name"]: pb_utils.triton_string_to_numpy(t["data_type"]) for t in config["output"]}
        # What the model returns: the reshape's shape where the config has one ([] for a [batch] output).
        self.output_dims = {t["name"]: [int(d) for d in (t["reshape"].get("shape", []) if "reshape" in t else t["dims"])]
                            for t in config["output"]}
        where = ModelConfig(name=self.name, platform=config.get("platform", ""), backend=config.get("backend", ""),
                            default_model_filename=config.get("default_model_filename", ""))
        path = model_file(Path(args["model_repository"]), where, args["model_version"])
        if not path.exists():
            raise pb_utils.TritonModelException(f"model {self.name!r}: model file {path} not found")
        device = "cpu"
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args['model_instance_device_id']}"
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        if device == "cpu" and "intra_op_thread_count" not in parameters:
            # The instances of a model run side by side in their own processes: each one spinning on
            # every core slowed two instances on two cores twentyfold.
            instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
            parameters["intra_op_thread_count"] = str(max(1, (os.cpu_count() or 1) // instances))
        self.device, self.one_by_one = device, 0
        self.file_inputs = file_inputs(self.inputs, parameters)  # what the model file takes
        self.model = self.runtime(self.name, path, device, parameters, self.file_inputs, list(self.outputs),
                                  keep_on_device=True)
        # After the runtime, which makes the instance's GPU the process's device.
        self.prepare = prepare_step(path.parent, parameters[PREPARE], device, parameters) if parameters.get(PREPARE) else None

    def execute(self, requests: list) -> list:
        feeds: list = [self._feed(request) for request in requests]
        if self.prepare is not None:
            try:
                feeds = self.prepare(feeds)
            except Exception as error:  # noqa: BLE001 - the step itself broke: every request says why
                return [self._error(error) for _ in requests]
        responses = [self._error(feed) if isinstance(feed, Exception) else None for feed in feeds]
        ready = [n for n, response in enumerate(responses) if response is None]
        for n, response in zip(ready, self._respond([feeds[n] for n in ready])):
            responses[n] = response
        return responses

    def _respond(self, feeds: list[Feed]) -> list:
        """The requests' responses: run together, or one by one where that fails."""
        if not feeds:
            return []
        try:
            return [self._response(result) for result in self._run_together(feeds)]
        except Exception as error:  # noqa: BLE001 - reported to the client, per request
            if len(feeds) == 1:
                return [self._error(error)]
            self.one_by_one += 1
            if str(self.one_by_one).strip("0") == "1":  # the 1st, 10th, 100th...: a bad request does it too
                pb_utils.Logger.log_warn(f"model {self.name!r}: a batch of {len(feeds)} requests failed "
                                         f"({type(error).__name__}: {error}); running them one by one "
                                         f"({self.one_by_one} time(s) so far)")
        responses = []
        for feed in feeds:
            try:
                responses.append(self._response(self._run_together([feed])[0]))
            except Exception as error:  # noqa: BLE001
                responses.append(self._error(error))
        return responses

    def _feed(self, request) -> Feed:
        tensors = {name: pb_utils.get_input_tensor_by_name(request, name) for name in self.inputs}
        return {name: _input(tensor) for name, tensor in tensors.items() if tensor is not None}

    def _run_together(self, feeds: list[Feed]) -> list[Feed]:
        for feed in feeds:
            missing = self.file_inputs.keys() - feed.keys()
            if missing:
                raise ValueError(f"model {self.name!r}: request lacks inputs {sorted(missing)}")
        same_shapes = all({k: v.shape[1:] for k, v in f.items()} == {k: v.shape[1:] for k, v in feeds[0].items()} for f in feeds)
        if not (self.batching and same_shapes and len(feeds) > 1):
            return [self._checked(self.run(typed(feed, self.file_inputs)), feed) for feed in feeds]
        sizes = [len(next(iter(feed.values()))) for feed in feeds]
        batch = typed({name: _concatenate([feed[name] for feed in feeds], self.device) for name in self.file_inputs},
                      self.file_inputs)  # once per batch
        outputs = self._checked(self.run(batch), batch)
        parts = {name: _split(value, sizes) for name, value in outputs.items()}
        return [{name: parts[name][i] for name in parts} for i in range(len(feeds))]

    def _checked(self, outputs: Mapping[str, Any], feed: Feed) -> Feed:
        batch = len(next(iter(feed.values()))) if self.batching else None
        checked = {}
        for name, dtype in self.outputs.items():
            if name not in outputs:
                raise RuntimeError(f"model {self.name!r} produced no output {name!r}")
            value = as_dtype(outputs[name], dtype)
            shape = list(value.shape[1:] if self.batching else value.shape)
            expected = self.output_dims[name]
            if batch is not None and (value.ndim == 0 or len(value) != batch):
                raise RuntimeError(f"model {self.name!r}: output {name!r} has batch size "
                                   f"{len(value) if value.ndim else 0}, expected {batch}")
            if len(shape) != len(expected) or any(e not in (-1, s) for e, s in zip(expected, shape)):
                raise RuntimeError(f"model {self.name!r}: output {name!r} has dims {shape}, config says {expected}")
            checked[name] = value
        return checked

    def _response(self, outputs: Feed):
        return pb_utils.InferenceResponse(output_tensors=[_output(k, v) for k, v in outputs.items()])

    def _error(self, error: Exception):
        text = " ".join(f"{type(error).__name__}: {error}".split())
        # The runtimes raise ValueError for what the request got wrong (an undecodable image, a
        # non-number): a client error, INVALID_ARGUMENT over gRPC and 400 over HTTP.
        code = pb_utils.TritonError.INVALID_ARG if isinstance(error, ValueError) else pb_utils.TritonError.INTERNAL
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(text[:1000], code))
