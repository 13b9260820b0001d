"""Quiet by default: third-party start-up chatter is turned off where it starts; INFO logging
(a script's ``--verbose``) brings it back.

A script calls ``setup(args.verbose)`` first. The library's modules load the noisy libraries
through here, so a program that configures nothing is quiet too:

- TensorFlow (``import_tensorflow``): ``TF_CPP_MIN_LOG_LEVEL=1`` hides its C++ INFO lines (devices,
  CPU features, MLIR), here and in the processes started from here. Its oneDNN notice is logged
  while the library loads, before TensorFlow reads that variable, so the absl INFO lines of the
  import are left out of what it writes to stderr; anything else it writes is kept.
- ONNX Runtime's quantization (``onnxruntime_quantization``): its hint to run its pre-processing,
  logged on the root logger before and after every model, and its notes on each weight with no
  channel axis to quantize per channel (a LayerNorm's) and each bias it leaves in floating point,
  are left out while it runs (``trtis.export`` lists what stayed in floating point).
- Tracing (``tracing``): torch's TracerWarnings (a Python value the trace freezes) and the
  deprecation notices of ``torch.jit`` are left out while ``trtis.export`` traces and checks:
  the export runs every form at other batch sizes and shapes, which is what such a warning foretells.

A variable the user set (``TF_CPP_MIN_LOG_LEVEL=0``) wins.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

# absl's C++ INFO line ("I0000 00:00:1795677982.67 7975 port.cc:153] ..."), and the line it writes before the first.
ABSL_INFO = re.compile(r"I\d{4} [\d:.]+\s+\d+ \S+:\d+\] |WARNING: All log messages before absl::InitializeLog")
QUANTIZATION_NOTES = re.compile(r"pre-processing before quantization|Axis \d+ is out-of-range for weight|"
                                r"Expected bias '.*' to be an initializer")


def verbose() -> bool:
    """Whether the program asked for detail: its root logger passes INFO."""
    return logging.getLogger().isEnabledFor(logging.INFO)


def setup(verbose: bool = False) -> None:
    """For a script, before it imports TensorFlow: log plain messages at WARNING (INFO with
    ``verbose``) and keep TensorFlow's C++ INFO lines out of this process and its children unless
    ``verbose``."""
    logging.basicConfig(format="%(message)s")
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    _tensorflow_log_level()


def _tensorflow_log_level() -> None:
    if not verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def import_tensorflow() -> ModuleType:
    """``import tensorflow``, without its INFO lines unless the program is verbose."""
    if "tensorflow" in sys.modules or verbose() or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow

        return tensorflow
    _tensorflow_log_level()
    with _stderr_without(ABSL_INFO):
        import tensorflow
    return tensorflow


@contextmanager
def _stderr_without(lines: re.Pattern) -> Iterator[None]:
    """Hold back what this process writes to stderr (file descriptor 2, C libraries included) during
    the block, then write it out without the lines that match ``lines``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            # A progress bar redraws after a carriage return: split there too, so a line written after it is found.
            pieces = re.split(r"(?<=[\r\n])", held.read().decode(errors="replace"))
            sys.stderr.write("".join(piece for piece in pieces if not lines.match(piece)))
            sys.stderr.flush()


class _WithoutQuantizationNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return verbose() or not (record.name == "root" and QUANTIZATION_NOTES.search(record.getMessage()))


@contextmanager
def onnxruntime_quantization() -> Iterator[None]:
    """While ONNX Runtime quantizes: without its pre-processing hint, a suggestion and not a
    fault (``trtis.export`` checks the quantized model against its source either way)."""
    root, hint = logging.getLogger(), _WithoutQuantizationNotes()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


@contextmanager
def tracing() -> Iterator[None]:
    """While a module is traced, saved or loaded for a check: without the tracer's warnings and
    ``torch.jit``'s deprecation notices, unless verbose."""
    import warnings

    import torch

    with warnings.catch_warnings():
        if not verbose():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield
