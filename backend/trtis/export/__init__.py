"""A PyTorch module -> a Triton model in the format asked for, every step checked against its source.

The network formats are a table, ``FORMATS``: each entry says which Triton platform serves it, where
it runs, how it is built from the module (or from the previous form), how it is checked, and whether
the server warms it up. ``export`` validates every option against that table before any work starts,
then builds, checks and configures the model:

    exported = export(net, [example], ["image"], ["hm", "wh", "reg"], "onnx", name="detector")
    repository.write_repository("model_repository", [exported.model])
    print(verify.table(exported.comparisons))

Checks: a step that keeps the precision (PyTorch -> ONNX -> simplified ONNX, TorchScript FP32) is
compared with ``compare`` (default: every output within 1e-3); a step that lowers it (INT8, FP16)
with ``compare_reduced`` (default: within 5% of each output's largest magnitude). Pass your own
comparators for outputs that need a smarter rule (the detection example matches heatmap peaks). A
comparison over its tolerance raises ``verify.VerificationError`` naming the step.

Outputs: whatever the module returns (a dict, a ``ModelOutput``, nested tuples) is flattened by
name (``trtis.export.outputs``), and every format is built from that flat form.

Shapes: axis 0 is the batch (``max_batch_size=0``: the model has none, and every axis is the
config's); ``dynamic_axes`` names more (``{"ids": {1: "sequence"}}``), for every format. The built
form is also run, and compared with the module, on inputs the config allows but the example is not:
batch 1 (or 2 when the example has one) and the max batch size, and every dynamic axis at twice the
example's size. A form that fails there (a batch frozen at the example's size, an axis the
program fixed) fails the export with ``ShapeError``, saying what to change, instead of failing in the
server. A per-example scalar output (``[batch]``) is configured as dims ``[1]`` reshaped to ``[]``.
"""
from __future__ import annotations

import copy
import functools
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trtis import config, quiet, repository, verify
from trtis.export import onnx as trtis_onnx
from trtis.export import quantize, tensorrt, torchscript
from trtis.export.outputs import Selected, output_paths
from trtis.serving import load_check

log = logging.getLogger(__name__)

Outputs = Mapping[str, np.ndarray]
Feed = Mapping[str, np.ndarray]
Comparator = Callable[[str, Outputs, Outputs], list[verify.Comparison]]


@dataclass
class ExportOptions:
    """How the model is exported and configured; ``export`` takes these as keyword arguments.

    ``instances`` is per GPU for the GPU formats (on ``gpus``, default all). ``max_batch_size=0``: the
    model has no batch axis (Triton's meaning). ``inputs``/``outputs`` override the config tensors that
    are otherwise read from the example inputs and the module's outputs (batch axis first, unless
    there is none). ``calibration`` (INT8): real input feeds, or a function returning
    them, called only when an INT8 form is built.
    """

    name: str
    max_batch_size: int = 8
    instances: int = 1
    gpus: Sequence[int] = ()
    dynamic_batching: config.DynamicBatching | None = field(default_factory=config.DynamicBatching)
    warmup_max_batch: int = 4
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    inputs: Sequence[config.Tensor] | None = None
    outputs: Sequence[config.Tensor] | None = None
    parameters: Mapping[str, Any] | None = None
    files: Mapping[str, Path | bytes] = field(default_factory=dict)
    compare: Comparator | None = None
    compare_reduced: Comparator | None = None
    calibration: Sequence[Feed] | Callable[[], Sequence[Feed]] | None = None
    calibration_method: str = "minmax"
    int8_form: str = "cpu"
    cache_dir: Path | None = None
    half: bool = True  # GPU formats run in FP16 (checked with ``compare_reduced``); False keeps FP32
    half_module: Callable[[torch.nn.Module], torch.nn.Module] = torchscript.HalfPrecision  # the FP16 form


@dataclass(frozen=True)
class Format:
    """One network format: what serves it, where it runs, how it is built and checked."""

    name: str
    serves: dict[str, str]  # the config's {"platform": ...} or {"backend": ...}
    devices: tuple[str, ...]  # "cpu", "gpu": where it may run
    summary: str
    build: Callable[[_Job], bytes | tuple[bytes, dict[str, Path]]]  # the model file (and extra files)
    unavailable: Callable[[], str | None] = lambda: None  # why it cannot be built here, or None
    calibrated: bool = False  # needs ``calibration``
    settings: Callable[[ExportOptions, str], dict[str, str]] = lambda options, device: {}  # config parameters

    def device(self, gpus: Sequence[int]) -> str:
        """Where this format runs for this request: the GPU when it must or when GPUs are asked for
        or present and the format can use them."""
        if self.devices == ("gpu",) or (gpus and "gpu" in self.devices):
            return "gpu"
        return "gpu" if "gpu" in self.devices and torch.cuda.is_available() else "cpu"


@dataclass
class Exported:
    """What ``export`` made: the model to write, every comparison made, and the format chosen."""

    model: repository.Model
    comparisons: list[verify.Comparison]
    format: str
    device: str
    notes: list[str] = field(default_factory=list)


class ShapeError(ValueError):
    """A built form fails on inputs its config allows (another batch size, another size of a dynamic axis)."""


REDUCED_FRACTION = 0.05  # INT8 and FP16 forms: each output within 5% of its peak magnitude
REDUCED_ADVICE = ("A reduced-precision form differs from PyTorch beyond its tolerance: calibrate on more real inputs "
                  "or with another calibration_method, judge it by your task's metric (compare_reduced=), keep FP32 "
                  "(half=False, or the onnx format), or let auto choose")
Runner = Callable[[tuple[torch.Tensor, ...]], Outputs]


class _Job:
    """One export: the module's reference outputs and the intermediate forms, each built once."""

    def __init__(self, module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], input_names: Sequence[str],
                 output_names: Sequence[str], options: ExportOptions):
        self.examples = tuple(example_inputs)
        self.input_names, self.output_names, self.options = list(input_names), list(output_names), options
        self.feeds = _feeds(input_names, self.examples)
        with torch.inference_mode():
            returned = module.eval()(*self.examples)
        self.module = Selected(module, output_paths(returned, output_names))  # what every format is built from
        self.reference = _named(output_names, self.module.pick(returned))
        self.comparisons: list[verify.Comparison] = []
        self.reduced_stages: set[str] = set()  # the stages checked with compare_reduced (INT8, FP16)
        self.reduced = False  # whether the form built lowers the precision (INT8, FP16)
        self.notes: list[str] = []
        self._int8: dict[str, bytes] = {}
        self.batched = options.max_batch_size > 0  # axis 0 is the batch
        self.config_inputs = options.inputs or _tensors(input_names, self.feeds, options.dynamic_axes, self.batched)
        self.config_outputs = options.outputs or _tensors(output_names, self.reference, options.dynamic_axes,
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
        found = []
        most, batch = self.options.max_batch_size, self.examples[0].shape[0]
        for other in sorted({1 if batch != 1 else 2, most} - {batch}) if self.batched else ():
            if other <= most:
                found.append((f"batch {other}", "axis 0 is the batch, but the form fixed it at the example's size (a "
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
            found.append((f"twice the example's size on {axes}", "the config leaves these axes free (-1): name them in "
                          "dynamic_axes so every format keeps them dynamic, or give fixed dims with inputs=",
                          tuple(doubled)))
        return found

    def half(self, module: Selected) -> Selected:
        """The FP16 form of the flattened module (give it a copy): ``half_module`` is given the
        caller's module (the example's reaches into its own layers); the wrapper stays outside it."""
        return Selected(self.options.half_module(module.module), module.paths)

    @property
    def device(self) -> str:
        """The device a GPU form is built and checked on: the first GPU asked for."""
        return f"cuda:{self.options.gpus[0] if self.options.gpus else 0}"

    def calibration_feeds(self) -> list[dict[str, np.ndarray]]:
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
                    reference = _named(self.output_names, self.module(*tensors))
            except Exception as error:
                raise ShapeError(f"model {self.options.name!r}: the module itself fails at {label}, which its config "
                                 f"allows ({_first_line(error)}): give fixed dims with inputs=") from error
            try:
                candidate = run(tensors)
            except Exception as error:
                raise ShapeError(f"model {self.options.name!r}: the {form} form fails at {label}, which its config allows "
                                 f"({_first_line(error)}); {meaning}") from error
            self.check(f"PyTorch vs {form} at {label}", reference, candidate, reduced)

    @functools.cached_property
    def onnx(self) -> tuple[Any, dict[str, np.ndarray]]:
        """The exported ONNX model and its outputs on the example inputs."""
        with _step(self.options.name, "PyTorch -> ONNX"):
            model = trtis_onnx.export(self.module, self.examples, self.input_names, self.output_names,
                                      self.options.dynamic_axes, batch=self.batched)
        outputs = trtis_onnx.run(model, self.feeds)
        self.check("PyTorch vs ONNX", self.reference, outputs)
        return model, outputs

    @functools.cached_property
    def simplified(self):
        with _step(self.options.name, "onnx-simplifier"):
            model = trtis_onnx.simplify(self.onnx[0])
        self.check("ONNX vs simplified", self.onnx[1], trtis_onnx.run(model, self.feeds))
        return model

    def int8(self, form: str) -> bytes:
        """The simplified model calibrated into an INT8 QDQ model of ``form``, checked against it."""
        if form not in self._int8:
            options = self.options
            feeds = self.calibration_feeds()
            with _step(options.name, f"INT8 calibration ({form} form, {options.calibration_method}, {len(feeds)} batches)"):
                quantized = quantize.quantize_int8(self.simplified, feeds, options.calibration_method,
                                                   options.cache_dir, form=form)
            left = quantize.float_ops(quantized)
            self.notes.append(f"INT8 {form} form: left in floating point: {', '.join(left) or 'nothing'}")
            data = quantized.SerializeToString()
            self.check(f"ONNX vs INT8 ONNX ({form} form)", self.onnx[1], trtis_onnx.run(data, self.feeds),
                       reduced=True)
            self._int8[form] = data
        return self._int8[form]


def _feeds(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: t.detach().cpu().numpy() for name, t in zip(names, tensors)}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _named(names: Sequence[str], outputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """A built form's outputs (a tuple in the order of ``names``) as arrays by name."""
    return {name: t.detach().cpu().numpy() for name, t in zip(names, outputs, strict=True)}


@contextmanager
def _step(model: str, what: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    log.info("%s: %s (%.1f s)", model, what, time.perf_counter() - began)


def _onnx_runner(job: _Job, data: bytes) -> Runner:
    return lambda tensors: trtis_onnx.run(data, _feeds(job.input_names, tensors))


def _build_onnx(job: _Job) -> bytes:
    data = job.simplified.SerializeToString()
    job.check_shapes("ONNX", _onnx_runner(job, data))
    return data


def _build_onnx_int8(job: _Job) -> bytes:
    data, job.reduced = job.int8(job.options.int8_form), True
    job.check_shapes("INT8 ONNX", _onnx_runner(job, data), reduced=True)
    return data


def _build_torchscript(job: _Job) -> bytes:
    device = "cuda" if FORMATS["torchscript"].device(job.options.gpus) == "gpu" else "cpu"
    half = job.reduced = device == "cuda" and job.options.half
    with _step(job.options.name, f"PyTorch -> TorchScript ({'FP16 on CUDA' if half else 'FP32 on ' + device})"):
        data = torchscript.export(job.module, job.examples, device, half=half, half_module=job.half)
    form = f"TorchScript{' FP16' if half else ''}"
    traced = _named(job.output_names, torchscript.run(data, job.examples, device))
    job.check(f"PyTorch vs {form}", job.reference, traced, reduced=half)
    job.check_shapes(form, lambda tensors: _named(job.output_names, torchscript.run(data, tensors, device)), reduced=half)
    return data


def _dynamic_shapes(job: _Job, most: int) -> tuple[tuple[dict[int, Any], ...]]:
    """torch.export's dims for each input: the batch (where there is one), and the axes
    ``dynamic_axes`` names, whose range (a sequence no longer than the position table) and relations
    (two inputs of one length) the export finds in the module's code; one tuple, for the wrapper's
    ``*inputs``."""
    # The example's batch may exceed the config's max (convert.sh checks with five images).
    batch = {0: torch.export.Dim("batch", min=1, max=max(2, most, job.examples[0].shape[0]))} if job.batched else {}
    shapes = []
    for name in job.input_names:
        named = (job.options.dynamic_axes or {}).get(name, {})
        shapes.append({**batch, **{axis: torch.export.Dim.AUTO for axis in named}})
    return (tuple(shapes),)


def _build_compiled(job: _Job) -> tuple[bytes, dict[str, Path]]:
    """``torch.export`` with a dynamic batch axis; the check compiles it with the runtime the server
    uses, on this host, and ships the inductor cache beside the model so the server starts warm."""
    options = job.options
    gpu = FORMATS["compiled"].device(options.gpus) == "gpu"
    half = job.reduced = gpu and options.half
    module = job.half(copy.deepcopy(job.module)) if half else job.module
    # A batch of one would be specialised (torch.export's 0/1 rule): the program traces two.
    examples = tuple(t.repeat(2, *[1] * (t.ndim - 1)) if job.batched and t.shape[0] == 1 else t for t in job.examples)
    with _step(options.name, f"PyTorch -> torch.export program ({'FP16, ' if half else ''}"
                             f"{'dynamic batch' if job.batched else 'no batch axis'})"):
        try:
            program = torch.export.export(module, examples, dynamic_shapes=_dynamic_shapes(job, options.max_batch_size))
        except torch._dynamo.exc.UserError as error:  # a dynamic axis the module's code constrains
            raise ShapeError(f"model {options.name!r}: torch.export cannot keep the axes of dynamic_axes dynamic "
                             f"({_first_line(error)}): bound them (fixed dims with inputs=), or use another format") from error
    cache = Path(options.cache_dir or tempfile.mkdtemp(prefix="trtis-export-")) / "inductor" / options.name
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.pt2"
        torch.export.save(program, path)
        device = job.device if gpu else "cpu"
        with _step(options.name, f"torch.compile on {device}{' (channels-last)' if gpu else ''}"):
            from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

            from trtis import runtimes

            # Compiled and checked with the data types the server will feed (the config's, e.g. FP16
            # images), so the cache that ships holds the graphs the instances will run.
            declared = {t.name: runtimes.numpy_dtype(config.pb.DataType.Name(config.triton_dtype(t.dtype)))
                        for t in options.inputs or ()}
            dtypes = {n: declared.get(n, job.feeds[n].dtype) for n in job.input_names}
            with temporary_cache_dir(str(cache)):
                # The sizes the server warms, compiled now: they ship in the cache.
                settings = {"inductor_cache_dir": str(cache), **_compiled_settings(options, "gpu" if gpu else "cpu")}
                runtime = runtimes.CompiledRuntime(options.name, path, device, settings, dtypes, job.output_names)
                compiled = runtime.run(runtimes.typed(job.feeds, dtypes))
        job.check(f"PyTorch vs compiled{' FP16' if half else ''}", job.reference, compiled, reduced=half)
        def run(tensors):  # the warmed graphs serve every batch size; a doubled free axis is what may compile
            with temporary_cache_dir(str(cache)):
                return runtime.run(runtimes.typed(_feeds(job.input_names, tensors), dtypes))
        job.check_shapes(f"compiled{' FP16' if half else ''}", run, reduced=half)
        return path.read_bytes(), {"1/inductor-cache": cache}


def _build_tensorrt(job: _Job) -> bytes:
    options = job.options
    if len(job.input_names) != 1:
        raise ValueError(f"model {options.name!r}: the TensorRT plan builder takes one input, not {job.input_names}")
    dims = list(job.feeds[job.input_names[0]].shape[1:])
    job.reduced = True
    cache = Path(options.cache_dir) / "tensorrt.timing-cache" if options.cache_dir else None
    with _step(options.name, "INT8 QDQ ONNX -> TensorRT plan"):
        return tensorrt.build_plan(job.int8("tensorrt"), job.input_names[0], dims, options.max_batch_size,
                                   timing_cache=cache)


def _compiled_settings(options: ExportOptions, device: str) -> dict[str, str]:
    """What a compiled model runs at load: a GPU's batch buckets, a CPU's two graphs (a batch of one
    and any other); a model without a batch axis, its example's shape."""
    if options.max_batch_size == 0:
        return {}
    if device == "gpu":
        return {config.BATCH_BUCKETS: config.batch_buckets_text(options.max_batch_size)}
    return {config.WARM_BATCH_SIZES: config.warm_batch_sizes(options.max_batch_size)}


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", {"platform": "onnxruntime_onnx"}, ("cpu",), "FP32 ONNX, simplified (ONNX Runtime)", _build_onnx),
    Format("onnx-int8", {"platform": "onnxruntime_onnx"}, ("cpu",), "calibrated INT8 QDQ ONNX (ONNX Runtime)",
           _build_onnx_int8, calibrated=True),
    Format("torchscript", {"platform": "pytorch_libtorch"}, ("cpu", "gpu"), "TorchScript: FP16 on a CUDA GPU, "
           "else FP32", _build_torchscript),
    Format("compiled", {"backend": "torch_compile"}, ("cpu", "gpu"), "torch.export program compiled by "
           "torch.compile at load (FP16, channels-last on a GPU; inductor cache shipped beside it)", _build_compiled,
           settings=_compiled_settings),
    Format("tensorrt", {"platform": "tensorrt_plan"}, ("gpu",), "TensorRT plan built from the INT8 QDQ model",
           _build_tensorrt, unavailable=tensorrt.available, calibrated=True),
)}
CHOICES = ("auto", *FORMATS)


def validate(format: str, options: ExportOptions, input_names: Sequence[str], example_inputs: Sequence[Any]) -> None:
    """Refuse what cannot work before any export work starts, naming the option at fault."""
    if format not in CHOICES:
        raise ValueError(f"unknown network format {format!r}: choose one of {', '.join(CHOICES)}")
    if len(input_names) != len(example_inputs):
        raise ValueError(f"{len(example_inputs)} example inputs but {len(input_names)} input names")
    if options.max_batch_size < 0:
        raise ValueError(f"max_batch_size must be 0 (no batch axis) or more, not {options.max_batch_size}")
    if options.instances < 1:
        raise ValueError(f"instances must be at least 1, not {options.instances}")
    if options.calibration_method not in quantize.METHODS:
        raise ValueError(f"calibration method {options.calibration_method!r} is not one of {sorted(quantize.METHODS)}")
    if options.int8_form not in quantize.FORMS:
        raise ValueError(f"INT8 form {options.int8_form!r} is not one of {sorted(quantize.FORMS)}")
    gpus = list(options.gpus)
    if len(set(gpus)) != len(gpus) or any(g < 0 for g in gpus):
        raise ValueError(f"GPU numbers must be distinct and >= 0: {gpus}")
    if format == "auto":
        return
    entry = FORMATS[format]
    reason = entry.unavailable()
    if reason:
        raise tensorrt.TensorRTUnavailable(f"the {format} format cannot be built here: {reason}")
    if gpus and "gpu" not in entry.devices:
        on_gpu = [f.name for f in FORMATS.values() if "gpu" in f.devices]
        raise ValueError(f"GPUs {gpus} were asked for, but the {format} format runs on the CPU; "
                         f"formats that run on GPUs: {', '.join(on_gpu)}")
    if entry.device(gpus) == "gpu":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"the {format} format was asked to run on GPUs {gpus}, but this machine has no CUDA GPU")
        if any(g >= count for g in gpus):
            raise ValueError(f"GPUs {gpus}: this machine has {count} GPU(s), numbered from 0")
    if format == "tensorrt" and options.max_batch_size == 0:
        raise ValueError("the tensorrt format's optimisation profile ranges over a batch axis: give max_batch_size "
                         "of 1 or more, or use the compiled format for a model without one")
    if entry.calibrated and options.calibration is None:
        raise ValueError(f"the {format} format is calibrated INT8: pass calibration feeds (real inputs)")


def _choose(job: _Job) -> str:
    """``auto``: TensorRT where it can be built; the compiled network on a GPU without it; else the
    faster ONNX form, measured on this CPU."""
    reason = tensorrt.available()
    if reason is None and job.batched and len(job.input_names) == 1:  # what the plan builder takes
        job.notes.append("auto: tensorrt (TensorRT and a GPU are present; INT8 from the QDQ model)")
        return "tensorrt"
    reason = reason or "the plan builder takes one input and a batch axis"
    if torch.cuda.is_available():
        job.notes.append(f"auto: compiled (a CUDA GPU without TensorRT: {reason})")
        return "compiled"
    if job.options.calibration is None:
        job.notes.append(f"auto: onnx (TensorRT unusable: {reason}; no calibration data for INT8)")
        return "onnx"
    job.simplified  # built and checked first: the rows a failed INT8 attempt removes below are INT8's alone
    before = len(job.comparisons)
    int8 = job.int8("cpu")
    failed = [row for row in job.comparisons[before:] if not row.ok]
    if failed:  # INT8 is a speed-up, not a requirement: FP32 ONNX serves, and the note says why
        job.reduced_stages -= {row.stage for row in job.comparisons[before:]}
        del job.comparisons[before:]
        worst = max(failed, key=lambda row: row.max_abs / row.tolerance)
        job.notes.append(f"auto: onnx (TensorRT unusable: {reason}; INT8 failed its check: {worst.output} differs by "
                         f"{worst.max_abs:.3g} > {worst.tolerance:.3g})")
        return "onnx"
    fast, slow = trtis_onnx.latency_ms(int8, job.feeds), trtis_onnx.latency_ms(job.simplified.SerializeToString(), job.feeds)
    chosen = "onnx-int8" if fast < slow else "onnx"
    job.notes.append(f"auto: {chosen} (TensorRT unusable: {reason}; on this CPU one batch took {fast:.0f} ms in INT8 "
                     f"and {slow:.0f} ms in FP32)")
    if chosen == "onnx-int8":
        job.options.int8_form = "cpu"
    return chosen


def _tensors(names: Sequence[str], arrays: Mapping[str, np.ndarray],
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


def export(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], input_names: Sequence[str],
           output_names: Sequence[str], format: str = "onnx", **options: Any) -> Exported:
    """Build ``module`` in ``format`` (a name of ``FORMATS``, or ``auto``), check every step, and
    configure it for Triton; ``options`` are ``ExportOptions`` fields (``name`` is required)."""
    settings = ExportOptions(**options)
    validate(format, settings, input_names, example_inputs)
    job = _Job(module, example_inputs, input_names, output_names, settings)
    with quiet.tracing():
        chosen = _choose(job) if format == "auto" else format
        entry = FORMATS[chosen]
        built = entry.build(job)
    artefact, files = built if isinstance(built, tuple) else (built, {})
    _require(job)
    device = entry.device(settings.gpus)
    common = dict(
        max_batch_size=settings.max_batch_size, dynamic_batching=settings.dynamic_batching,
        inputs=job.config_inputs, outputs=job.config_outputs,
        parameters={**({"FORCE_CPU_ONLY_INPUT_TENSORS": "no"} if device == "gpu" else {}),
                    **entry.settings(settings, device), **(settings.parameters or {})})
    buckets = [int(size) for size in common["parameters"].get(config.BATCH_BUCKETS, "").split(",") if size]
    if buckets and settings.dynamic_batching is not None and not settings.dynamic_batching.preferred_batch_sizes:
        # The dynamic batcher forms the sizes the model runs without padding.
        common["dynamic_batching"] = replace(settings.dynamic_batching, preferred_batch_sizes=buckets)
    if device == "gpu":
        # The first run of each batch size in each instance's process is slow on a GPU (kernels load,
        # cuDNN chooses algorithms): the server runs the small ones before it reports ready. Not all of
        # them: each process's allocator keeps the memory of the largest batch it ran.
        # A model without a batch axis is warmed once (Triton's batch_size 1); free axes at the example's size.
        most = settings.max_batch_size if job.batched else 1
        common["warmup_batch_sizes"] = range(1, min(settings.warmup_max_batch, most) + 1)
        common["warmup_inputs"] = [replace(t, dims=list(job.feeds[t.name].shape[1 if job.batched else 0:]))
                                   if -1 in t.dims and t.name in job.feeds else t for t in job.config_inputs]
        instances = config.Instances(settings.instances, kind="gpu", gpus=tuple(settings.gpus))
    else:
        instances = config.Instances(settings.instances)
    model_config = config.model_config(settings.name, **entry.serves, instances=[instances], **common)
    model = repository.Model(model_config, artefact, files={**files, **settings.files})
    _check_fresh_load(job, model, job.device if device == "gpu" else "cpu")
    for note in job.notes:
        log.info("%s: %s", settings.name, note)
    return Exported(model, job.comparisons, chosen, device, job.notes)


def _check_fresh_load(job: _Job, model: repository.Model, device: str) -> None:
    """Load the model as written into a repository, in a new process with only its backend's
    imports, and compare what it computes there with the module: "exports but cannot load in the
    server" (a type, an op or a module only the caller's process had) fails here."""
    with tempfile.TemporaryDirectory(prefix="trtis-export-") as root:
        repository.write_repository(Path(root), [model])
        with _step(job.options.name, f"loaded and run in a fresh process on {device}"):
            outputs = load_check.run_fresh(Path(root), model.config.name, device, job.feeds)
    # Inputs the config declares narrower than the example's (FP16 images) reach it cast, as in the server.
    cast = any(tensor.data_type != config.triton_dtype(job.feeds[tensor.name].dtype)
               for tensor in model.config.input if tensor.name in job.feeds)
    job.check(f"PyTorch vs {model.config.name} loaded in a fresh process", job.reference, outputs, job.reduced or cast)
    _require(job)


def _require(job: _Job) -> None:
    """Raise on any comparison over its tolerance; for a reduced-precision one, say what to change."""
    try:
        verify.require(job.comparisons)
    except verify.VerificationError as error:
        if any(not row.ok and row.stage in job.reduced_stages for row in job.comparisons):
            raise verify.VerificationError(f"{error}. {REDUCED_ADVICE}") from None
        raise
