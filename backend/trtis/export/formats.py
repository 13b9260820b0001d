"""The format table: for each network format, what serves it, where it runs, how it is built from
the module (or from the previous form) and checked, and what its config carries; ``validate``
refuses options against it before any work, ``choose`` picks the form ``auto`` stands for."""
from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trtis import config
from trtis.export import onnx as trtis_onnx
from trtis.export import quantize, tensorrt, torchscript
from trtis.export.job import Job, Runner, as_feeds, first_line, named_outputs, timed_step
from trtis.export.options import ExportOptions, ShapeError


@dataclass(frozen=True)
class Format:
    """One network format: what serves it, where it runs, how it is built and checked."""

    name: str
    serves: dict[str, str]  # the config's {"platform": ...} or {"backend": ...}
    kinds: tuple[str, ...]  # "cpu", "gpu" (Triton's instance kinds): where it may run
    summary: str
    build: Callable[[Job], bytes | tuple[bytes, dict[str, Path]]]  # the model file (and extra files)
    unavailable: Callable[[], str | None] = lambda: None  # why it cannot be built here, or None
    calibrated: bool = False  # needs ``calibration``
    parameters: Callable[[ExportOptions, str], dict[str, str]] = lambda options, kind: {}  # config parameters

    def kind(self, gpus: Sequence[int]) -> str:
        """Where this format runs for this request: the GPU when it must or when GPUs are asked for
        or present and the format can use them."""
        if self.kinds == ("gpu",) or (gpus and "gpu" in self.kinds):
            return "gpu"
        return "gpu" if "gpu" in self.kinds and torch.cuda.is_available() else "cpu"



def _onnx_runner(job: Job, data: bytes) -> Runner:
    return lambda tensors: trtis_onnx.run(data, as_feeds(job.input_names, tensors))


def _build_onnx(job: Job) -> bytes:
    data = job.simplified.SerializeToString()
    job.check_shapes("ONNX", _onnx_runner(job, data))
    return data


def _build_onnx_int8(job: Job) -> bytes:
    data, job.reduced = job.int8(job.options.int8_form), True
    job.check_shapes("INT8 ONNX", _onnx_runner(job, data), reduced=True)
    return data


def _build_torchscript(job: Job) -> bytes:
    device = job.device if FORMATS["torchscript"].kind(job.options.gpus) == "gpu" else "cpu"
    half = job.reduced = device != "cpu" and job.options.half
    with timed_step(job.options.name, f"PyTorch -> TorchScript ({'FP16 on CUDA' if half else 'FP32 on ' + device})"):
        data = torchscript.export(job.module, job.examples, device, half=half, half_module=job.half)
    form = f"TorchScript{' FP16' if half else ''}"
    traced = named_outputs(job.output_names, torchscript.run(data, job.examples, device))
    job.check(f"PyTorch vs {form}", job.reference, traced, reduced=half)
    job.check_shapes(form, lambda tensors: named_outputs(job.output_names, torchscript.run(data, tensors, device)), reduced=half)
    return data


def _dynamic_shapes(job: Job, most: int) -> tuple[tuple[dict[int, Any], ...]]:
    """torch.export's dims for each input: the batch (where there is one), and the axes
    ``dynamic_axes`` names, whose range (a sequence no longer than the position table) and relations
    (two inputs of one length) the export finds in the module's code; one tuple, for the wrapper's
    ``*inputs``."""
    # The example may hold more inputs than the config's max batch (a caller checks on every sample at once).
    batch = {0: torch.export.Dim("batch", min=1, max=max(2, most, job.examples[0].shape[0]))} if job.batched else {}
    shapes = []
    for name in job.input_names:
        named = (job.options.dynamic_axes or {}).get(name, {})
        shapes.append({**batch, **{axis: torch.export.Dim.AUTO for axis in named}})
    return (tuple(shapes),)


def _build_compiled(job: Job) -> tuple[bytes, dict[str, Path]]:
    """``torch.export`` with a dynamic batch axis; the check compiles it with the runtime the server
    uses, on this host, and ships the inductor cache beside the model so the server starts warm."""
    options = job.options
    gpu = FORMATS["compiled"].kind(options.gpus) == "gpu"
    half = job.reduced = gpu and options.half
    module = job.half(copy.deepcopy(job.module)) if half else job.module
    # A batch of one would be specialised (torch.export's 0/1 rule): the program traces two.
    examples = tuple(t.repeat(2, *[1] * (t.ndim - 1)) if job.batched and t.shape[0] == 1 else t for t in job.examples)
    with timed_step(options.name, f"PyTorch -> torch.export program ({'FP16, ' if half else ''}"
                             f"{'dynamic batch' if job.batched else 'no batch axis'})"):
        try:
            program = torch.export.export(module, examples, dynamic_shapes=_dynamic_shapes(job, options.max_batch_size))
        except torch._dynamo.exc.UserError as error:  # a dynamic axis the module's code constrains
            raise ShapeError(f"model {options.name!r}: torch.export cannot keep the axes of dynamic_axes dynamic "
                             f"({first_line(error)}): bound them (fixed dims with inputs=), or use another format") from error
    cache = Path(options.cache_dir or tempfile.mkdtemp(prefix="trtis-export-")) / "inductor" / options.name
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.pt2"
        torch.export.save(program, path)
        device = job.device if gpu else "cpu"
        with timed_step(options.name, f"torch.compile on {device}{' (channels-last)' if gpu else ''}"):
            from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

            from trtis import runtimes

            # Compiled and checked with the data types the server will feed (the config's, e.g. FP16
            # images), so the cache that ships holds the graphs the instances will run.
            declared = {t.name: runtimes.numpy_dtype(config.pb.DataType.Name(config.triton_dtype(t.dtype)))
                        for t in options.inputs or ()}
            dtypes = {n: declared.get(n, job.feeds[n].dtype) for n in job.input_names}
            with temporary_cache_dir(str(cache)):
                # The sizes the server warms, compiled now: they ship in the cache.
                parameters = {"inductor_cache_dir": str(cache), **compiled_parameters(options, "gpu" if gpu else "cpu")}
                runtime = runtimes.CompiledRuntime(options.name, path, device, parameters, dtypes, job.output_names)
                compiled = runtime.run(runtimes.typed(job.feeds, dtypes))
        job.check(f"PyTorch vs compiled{' FP16' if half else ''}", job.reference, compiled, reduced=half)
        def run(tensors):  # the warmed graphs serve every batch size; a doubled free axis is what may compile
            with temporary_cache_dir(str(cache)):
                return runtime.run(runtimes.typed(as_feeds(job.input_names, tensors), dtypes))
        job.check_shapes(f"compiled{' FP16' if half else ''}", run, reduced=half)
        return path.read_bytes(), {"1/inductor-cache": cache}


def _build_tensorrt(job: Job) -> bytes:
    options = job.options
    if len(job.input_names) != 1:
        raise ValueError(f"model {options.name!r}: the TensorRT plan builder takes one input, not {job.input_names}")
    dims = list(job.feeds[job.input_names[0]].shape[1:])
    job.reduced = True
    cache = Path(options.cache_dir) / "tensorrt.timing-cache" if options.cache_dir else None
    with timed_step(options.name, "INT8 QDQ ONNX -> TensorRT plan"):
        return tensorrt.build_plan(job.int8("tensorrt"), job.input_names[0], dims, options.max_batch_size,
                                   timing_cache=cache)


def compiled_parameters(options: ExportOptions, kind: str) -> dict[str, str]:
    """What a compiled model runs at load: a GPU's batch buckets, a CPU's two graphs (a batch of one
    and any other); a model without a batch axis, its example's shape."""
    if options.max_batch_size == 0:
        return {}
    if kind == "gpu":
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
           parameters=compiled_parameters),
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
    if gpus and "gpu" not in entry.kinds:
        on_gpu = [f.name for f in FORMATS.values() if "gpu" in f.kinds]
        raise ValueError(f"GPUs {gpus} were asked for, but the {format} format runs on the CPU; "
                         f"formats that run on GPUs: {', '.join(on_gpu)}")
    if entry.kind(gpus) == "gpu":
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


def choose(job: Job) -> str:
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

