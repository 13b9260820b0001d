"""What ``trtis.export`` takes and gives: its options, its result, and the error for shapes a form cannot serve."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trtis import config, repository, verify
from trtis.export import torchscript

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



@dataclass
class Exported:
    """What ``export`` made: the model to write, every comparison made, and the format chosen."""

    model: repository.Model
    comparisons: list[verify.Comparison]
    format: str
    kind: str  # "cpu" or "gpu": where its instances run (Triton's instance kind)
    notes: list[str] = field(default_factory=list)


class ShapeError(ValueError):
    """A built form fails on inputs its config allows (another batch size, another size of a dynamic axis)."""
