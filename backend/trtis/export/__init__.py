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

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from trtis import config, quiet, repository
from trtis.export.formats import CHOICES, FORMATS, Format, choose, validate
from trtis.export.job import REDUCED_ADVICE, REDUCED_FRACTION, Job, require_checks, timed_step
from trtis.export.options import Comparator, ExportOptions, Exported, Feed, Outputs, ShapeError
from trtis.serving import load_check

__all__ = ["CHOICES", "FORMATS", "REDUCED_ADVICE", "REDUCED_FRACTION", "Comparator", "ExportOptions", "Exported",
           "Feed", "Format", "Outputs", "ShapeError", "export", "validate"]

log = logging.getLogger(__name__)


def export(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor], input_names: Sequence[str],
           output_names: Sequence[str], format: str = "onnx", **given: Any) -> Exported:
    """Build ``module`` in ``format`` (a name of ``FORMATS``, or ``auto``), check every step, and
    configure it for Triton; ``given`` are ``ExportOptions`` fields (``name`` is required)."""
    options = ExportOptions(**given)
    validate(format, options, input_names, example_inputs)
    job = Job(module, example_inputs, input_names, output_names, options)
    with quiet.tracing():
        chosen = choose(job) if format == "auto" else format
        entry = FORMATS[chosen]
        built = entry.build(job)
    artefact, files = built if isinstance(built, tuple) else (built, {})
    require_checks(job)
    kind = entry.kind(options.gpus)
    common = dict(
        max_batch_size=options.max_batch_size, dynamic_batching=options.dynamic_batching,
        inputs=job.config_inputs, outputs=job.config_outputs,
        parameters={**({"FORCE_CPU_ONLY_INPUT_TENSORS": "no"} if kind == "gpu" else {}),
                    **entry.parameters(options, kind), **(options.parameters or {})})
    buckets = [int(size) for size in common["parameters"].get(config.BATCH_BUCKETS, "").split(",") if size]
    if buckets and options.dynamic_batching is not None and not options.dynamic_batching.preferred_batch_sizes:
        # The dynamic batcher forms the sizes the model runs without padding.
        common["dynamic_batching"] = replace(options.dynamic_batching, preferred_batch_sizes=buckets)
    if kind == "gpu":
        # The first run of each batch size in each instance's process is slow on a GPU (kernels load,
        # cuDNN chooses algorithms): the server runs the small ones before it reports ready. Not all of
        # them: each process's allocator keeps the memory of the largest batch it ran.
        # A model without a batch axis is warmed once (Triton's batch_size 1); free axes at the example's size.
        most = options.max_batch_size if job.batched else 1
        common["warmup_batch_sizes"] = range(1, min(options.warmup_max_batch, most) + 1)
        common["warmup_inputs"] = [replace(t, dims=list(job.feeds[t.name].shape[1 if job.batched else 0:]))
                                   if -1 in t.dims and t.name in job.feeds else t for t in job.config_inputs]
        instances = config.Instances(options.instances, kind="gpu", gpus=tuple(options.gpus))
    else:
        instances = config.Instances(options.instances)
    model_config = config.model_config(options.name, **entry.serves, instances=[instances], **common)
    model = repository.Model(model_config, artefact, files={**files, **options.files})
    _check_fresh_load(job, model, job.device if kind == "gpu" else "cpu")
    for note in job.notes:
        log.info("%s: %s", options.name, note)
    return Exported(model, job.comparisons, chosen, kind, job.notes)


def _check_fresh_load(job: Job, model: repository.Model, device: str) -> None:
    """Load the model as written into a repository, in a new process with only its backend's
    imports, and compare what it computes there with the module: "exports but cannot load in the
    server" (a type, an op or a module only the caller's process had) fails here."""
    with tempfile.TemporaryDirectory(prefix="trtis-export-") as root:
        repository.write_repository(Path(root), [model])
        with timed_step(job.options.name, f"loaded and run in a fresh process on {device}"):
            outputs = load_check.run_fresh(Path(root), model.config.name, device, job.feeds)
    # Inputs the config declares narrower than the example's (FP16 images) reach it cast, as in the server.
    cast = any(tensor.data_type != config.triton_dtype(job.feeds[tensor.name].dtype)
               for tensor in model.config.input if tensor.name in job.feeds)
    job.check(f"PyTorch vs {model.config.name} loaded in a fresh process", job.reference, outputs, job.reduced or cast)
    require_checks(job)

