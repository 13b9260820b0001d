"""One export's state: the module's reference outputs, the intermediate forms (each built once), the
checks made so far and the inputs the config allows besides the example."""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from trtis import config, verify
from trtis.export import onnx as trtis_onnx
from trtis.export import quantize
from trtis.export.options import ExportOptions, Outputs, ShapeError
from trtis.export.outputs import Selected, output_paths

log = logging.getLogger("trtis.export")

REDUCED_FRACTION = 0.05  # INT8 and FP16 forms: each output within 5% of its peak magnitude
REDUCED_ADVICE = ("A reduced-precision form differs from PyTorch beyond its tolerance: calibrate on more real inputs "
                  "or with another calibration_method, judge it by your task's metric (compare_reduced=), keep FP32 "
                  "(half=False, or the onnx format), or let auto choose")
Runner = Callable[[tuple[torch.Tensor, ...]], Outputs]


class Job:
    """One export: the module's reference outputs and the intermediate forms, each built once."""

    def __init__(self, module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], input_names: Sequence[str],
                 output_names: Sequence[str], options: ExportOptions):
        self.examples = tuple(example_inputs)
        self.input_names, self.output_names, self.options = list(input_names), list(output_names), options
        self.feeds = as_feeds(input_names, self.examples)
        with torch.inference_mode():
            returned = module.eval()(*self.examples)
        self.module = Selected(module, output_paths(returned, output_names))  # what every format is built from
        self.reference = named_outputs(output_names, self.module.pick(returned))
        self.comparisons: list[verify.Comparison] = []
        self.reduced_stages: set[str] = set()  # the stages checked with compare_reduced (INT8, FP16)
        self.reduced = False  # whether the form built lowers the precision (INT8, FP16)
        self.notes: list[str] = []
        self._int8: dict[str, bytes] = {}
        self.batched = options.max_batch_size > 0  # axis 0 is the batch
        self.config_inputs = options.inputs or config_tensors(input_names, self.feeds, options.dynamic_axes, self.batched)
        self.config_outputs = options.outputs or config_tensors(output_names, self.reference, options.dynamic_axes,
                                                          self.batched)

    def check(self, stage: str, reference: Outputs, candidate: Outputs, reduced: bool = False) -> None:
        compare = self.options.compare_reduced if reduced else self.options.compare
        compare = compare or (verify.relative(REDUCED_FRACTION) if reduced else verify.within(1e-3))
        stage = f"{self.options.name}: {stage}"
        if reduced:
            self.reduced_stages.add(stage)
        self.comparisons += compare(stage, reference, candidate)

    @functools.cached_property
    def variants(self) -> list[tuple[str, str, tuple[torch.Tensor, ...]]]:
        """Inputs the config allows and the example is not, with what a failure there means: other
        batch sizes (1, or 2 when the example has one, and the max), and every axis the config leaves
        free (-1) at twice the example's size."""
        allowed = []
        most, batch = self.options.max_batch_size, self.examples[0].shape[0]
        for other in sorted({1 if batch != 1 else 2, most} - {batch}) if self.batched else ():
            if other <= most:
                allowed.append((f"batch {other}", "axis 0 is the batch, but the form fixed it at the example's size (a "
                              "loop or reshape over the batch): make the module batch-agnostic, or export it with "
                              "max_batch_size=0 (no batch axis)",
                              tuple(t[torch.arange(other) % len(t)] for t in self.examples)))
        offset = 1 if self.batched else 0  # the config's dims leave the batch axis out
        free = {tensor.name: [axis + offset for axis, size in enumerate(tensor.dims) if size == -1]
                for tensor in self.config_inputs}
        if any(free.get(name) for name in self.input_names):
            doubled = []
            for name, tensor in zip(self.input_names, self.examples):
                for axis in free.get(name, []):
                    tensor = torch.cat([tensor, tensor], dim=axis)
                doubled.append(tensor)
            axes = ", ".join(f"{name} axis {axis}" for name in self.input_names for axis in free.get(name, []))
            allowed.append((f"twice the example's size on {axes}", "the config leaves these axes free (-1): name them in "
                          "dynamic_axes so every format keeps them dynamic, or give fixed dims with inputs=",
                          tuple(doubled)))
        return allowed

    def half(self, module: Selected) -> Selected:
        """The FP16 form of the flattened module (give it a copy): ``half_module`` is given the
        caller's module (the example's reaches into its own layers); the wrapper stays outside it."""
        return Selected(self.options.half_module(module.module), module.paths)

    @property
    def device(self) -> str:
        """The device a GPU form is built and checked on: the first GPU asked for."""
        return f"cuda:{self.options.gpus[0] if self.options.gpus else 0}"

    def calibrationas_feeds(self) -> list[dict[str, np.ndarray]]:
        """The caller's calibration feeds as arrays, each checked against the example's inputs (names,
        data types, ranks) so a mistake is named here rather than by ONNX Runtime mid-calibration."""
        given = self.options.calibration() if callable(self.options.calibration) else self.options.calibration
        if not isinstance(given, Sequence) or isinstance(given, Mapping) or not given:
            raise ValueError(f"model {self.options.name!r}: calibration must be a non-empty list of feeds, one dict "
                             f"{{input name: array}} per batch, not {type(given).__name__}")
        feeds = []
        for number, feed in enumerate(given):
            if not isinstance(feed, Mapping) or set(feed) != set(self.input_names):
                keys = sorted(feed) if isinstance(feed, Mapping) else type(feed).__name__
                raise ValueError(f"model {self.options.name!r}: calibration feed {number} has {keys}; each feed is "
                                 f"a dict with exactly the inputs {self.input_names}")
            arrays = {}
            for name in self.input_names:
                value = feed[name].detach().cpu().numpy() if isinstance(feed[name], torch.Tensor) else feed[name]
                expected = self.feeds[name]
                if not isinstance(value, np.ndarray) or value.dtype != expected.dtype or value.ndim != expected.ndim:
                    got = (f"{value.dtype} {list(value.shape)}" if isinstance(value, np.ndarray)
                           else type(value).__name__)
                    raise ValueError(f"model {self.options.name!r}: calibration feed {number}, input {name!r}: "
                                     f"expected a {expected.dtype} array of rank {expected.ndim} like the example "
                                     f"{list(expected.shape)}, got {got}")
                arrays[name] = value
            feeds.append(arrays)
        return feeds

    def check_shapes(self, form: str, run: Runner, reduced: bool = False) -> None:
        """Run the built form on each variant and compare it with the module there."""
        for label, meaning, tensors in self.variants:
            try:
                with torch.inference_mode():
                    reference = named_outputs(self.output_names, self.module(*tensors))
            except Exception as error:
                raise ShapeError(f"model {self.options.name!r}: the module itself fails at {label}, which its config "
                                 f"allows ({first_line(error)}): give fixed dims with inputs=") from error
            try:
                candidate = run(tensors)
            except Exception as error:
                raise ShapeError(f"model {self.options.name!r}: the {form} form fails at {label}, which its config allows "
                                 f"({first_line(error)}); {meaning}") from error
            self.check(f"PyTorch vs {form} at {label}", reference, candidate, reduced)

    @functools.cached_property
    def onnx(self) -> tuple[Any, dict[str, np.ndarray]]:
        """The exported ONNX model and its outputs on the example inputs."""
        with timed_step(self.options.name, "PyTorch -> ONNX"):
            model = trtis_onnx.export(self.module, self.examples, self.input_names, self.output_names,
                                      self.options.dynamic_axes, batch=self.batched)
        outputs = trtis_onnx.run(model, self.feeds)
        self.check("PyTorch vs ONNX", self.reference, outputs)
        return model, outputs

    @functools.cached_property
    def simplified(self):
        with timed_step(self.options.name, "onnx-simplifier"):
            model = trtis_onnx.simplify(self.onnx[0])
        self.check("ONNX vs simplified", self.onnx[1], trtis_onnx.run(model, self.feeds))
        return model

    def int8(self, form: str) -> bytes:
        """The simplified model calibrated into an INT8 QDQ model of ``form``, checked against it."""
        if form not in self._int8:
            options = self.options
            feeds = self.calibrationas_feeds()
            with timed_step(options.name, f"INT8 calibration ({form} form, {options.calibration_method}, {len(feeds)} batches)"):
                quantized = quantize.quantize_int8(self.simplified, feeds, options.calibration_method,
                                                   options.cache_dir, form=form)
            left = quantize.float_ops(quantized)
            self.notes.append(f"INT8 {form} form: left in floating point: {', '.join(left) or 'nothing'}")
            data = quantized.SerializeToString()
            self.check(f"ONNX vs INT8 ONNX ({form} form)", self.onnx[1], trtis_onnx.run(data, self.feeds),
                       reduced=True)
            self._int8[form] = data
        return self._int8[form]


def as_feeds(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: t.detach().cpu().numpy() for name, t in zip(names, tensors)}


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def named_outputs(names: Sequence[str], outputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """A built form's outputs (a tuple in the order of ``names``) as arrays by name."""
    return {name: t.detach().cpu().numpy() for name, t in zip(names, outputs, strict=True)}


@contextmanager
def timed_step(model: str, what: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    log.info("%s: %s (%.1f s)", model, what, time.perf_counter() - began)


def config_tensors(names: Sequence[str], arrays: Mapping[str, np.ndarray],
             dynamic: Mapping[str, Mapping[int, str]] | None, batched: bool) -> list[config.Tensor]:
    """The config's tensors, batch axis (where there is one) left out: the axes ``dynamic`` names
    are -1; a tensor that is only a batch (one number per example), or a scalar, is dims [1]
    reshaped to [] (Triton needs dims)."""
    tensors = []
    for name in names:
        shape = list(arrays[name].shape)
        for axis in (dynamic or {}).get(name, {}):
            shape[axis] = -1
        dims = shape[1:] if batched else shape
        tensors.append(config.Tensor(name, arrays[name].dtype, dims or [1], reshape=None if dims else []))
    return tensors


def require_checks(job: Job) -> None:
    """Raise on any comparison over its tolerance; for a reduced-precision one, say what to change."""
    try:
        verify.require(job.comparisons)
    except verify.VerificationError as error:
        if any(not row.ok and row.stage in job.reduced_stages for row in job.comparisons):
            raise verify.VerificationError(f"{error}. {REDUCED_ADVICE}") from None
        raise
