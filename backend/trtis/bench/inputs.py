"""What the benchmark sends: requests built from files (for a BYTES input) or random tensors of
the shape and data type the served model's config declares, as perf_analyzer makes them.

A request is a dict of arrays keyed by input name, with the batch axis (size 1) where the model
batches; the load generator sends a list of them round-robin.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb
from tritonclient.utils import triton_to_np_dtype

from trtis.bench.ensembles import served_configs
from trtis.config import ModelConfig

Request = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """One input of a served model: ``dims`` exclude the batch axis, which ``batching`` adds."""

    name: str
    datatype: str  # Triton's name: "FP32", "BYTES"...
    dims: tuple[int, ...]
    batching: bool


def inputs_of(config: ModelConfig) -> list[InputSpec]:
    """The inputs a model's config declares."""
    return [InputSpec(t.name, pb.DataType.Name(t.data_type).removeprefix("TYPE_").replace("STRING", "BYTES"),
                      tuple(int(d) for d in t.dims), config.max_batch_size > 0) for t in config.input]


def model_inputs(url: str, model: str, headers: Mapping[str, str] | None = None) -> list[InputSpec]:
    """The inputs of ``model`` as the server at ``url`` (gRPC) configures them."""
    return inputs_of(served_configs(url, model, headers)[model])


def _shape(spec: InputSpec, shapes: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """The request shape of one input: the config's dims, with ``shapes`` filling variable (-1) ones."""
    dims = tuple(int(d) for d in shapes.get(spec.name, spec.dims))
    if len(dims) != len(spec.dims) or any(c not in (-1, d) for c, d in zip(spec.dims, dims)):
        raise ValueError(f"input {spec.name!r}: shape {list(dims)} does not fit its config dims {list(spec.dims)}")
    if any(d < 0 for d in dims):
        raise ValueError(f"input {spec.name!r} has variable dims {list(spec.dims)}: give its shape "
                         f"(shapes={{{spec.name!r}: [...]}}, or --shape {spec.name}=D1,D2 on the command line)")
    return ((1,) if spec.batching else ()) + dims


def _random(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if spec.datatype == "BYTES":
        raise ValueError(f"input {spec.name!r} is BYTES: its content must mean something to the model, "
                         "so give files to send (input files)")
    dtype = np.dtype(triton_to_np_dtype(spec.datatype))
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 100, shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def random_requests(inputs: Sequence[InputSpec], count: int = 16, shapes: Mapping[str, Sequence[int]] | None = None,
                    seed: int = 0) -> list[Request]:
    """``count`` requests of random values (uniform in [0, 1) for floats, 0..99 for integers)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    rng, shapes = np.random.default_rng(seed), dict(shapes or {})
    return [{spec.name: _random(spec, _shape(spec, shapes), rng) for spec in inputs} for _ in range(count)]


def file_requests(inputs: Sequence[InputSpec], files: Sequence[Path], input_name: str | None = None,
                  shapes: Mapping[str, Sequence[int]] | None = None, seed: int = 0) -> list[Request]:
    """One request per file: its bytes go to the BYTES input (``input_name``, or the only one);
    the other inputs get random values."""
    strings = [spec for spec in inputs if spec.datatype == "BYTES"]
    chosen = [spec for spec in strings if spec.name == input_name] if input_name else strings
    if len(chosen) != 1:
        raise ValueError(f"files go to one BYTES input: the model has {[s.name for s in strings] or 'none'}"
                         + (f", none named {input_name!r}" if input_name else "; name the one to use"))
    if not files:
        raise ValueError("no input files given")
    target, rng, shapes = chosen[0], np.random.default_rng(seed), dict(shapes or {})
    shape = _shape(target, {target.name: [1 if d == -1 else d for d in target.dims], **shapes})
    if int(np.prod(shape)) != 1:
        raise ValueError(f"input {target.name!r} takes {int(np.prod(shape))} strings per request; files give one")
    requests = []
    for path in files:
        request = {target.name: np.array([Path(path).read_bytes()], dtype=np.object_).reshape(shape)}
        request.update({spec.name: _random(spec, _shape(spec, shapes), rng) for spec in inputs if spec is not target})
        requests.append({spec.name: request[spec.name] for spec in inputs})
    return requests


def files_under(paths: Iterable[Path], suffixes: Sequence[str] = ()) -> list[Path]:
    """Files as given; folders expanded to their files (those ending in ``suffixes``, when given)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and (not suffixes or p.suffix.lower() in suffixes))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"input file {path} not found")
    return found


def requests_for(inputs: Sequence[InputSpec], files: Sequence[Path] = (), count: int = 16,
                 shapes: Mapping[str, Sequence[int]] | None = None) -> tuple[list[Request], str]:
    """Requests for a model taking ``inputs``, and how a report names them: one per file given
    (see ``file_requests``), or ``count`` random ones."""
    if files:
        return file_requests(inputs, files, shapes=shapes), f"{len(files)} input files"
    return random_requests(inputs, count, shapes), f"{count} random requests"
