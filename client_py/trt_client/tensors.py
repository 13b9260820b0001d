"""What a model takes and returns, and turning the caller's arrays into a valid request.

Checks happen here, before anything is sent, so that a wrong name, data type or shape is
reported with the model's own description instead of a server error.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from trt_client import labels
from trt_client.errors import InvalidInput


@dataclass(frozen=True)
class TensorInfo:
    """One input or output; ``shape`` excludes the batch axis when the model batches."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.name} ({self.datatype}, {list(self.shape)})"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    max_batch_size: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    parameters: Mapping[str, str]  # the config's parameters (the detection ensemble names its classes there)
    label_files: Mapping[str, str]  # output name -> its label_filename (a file Triton does not serve)

    @classmethod
    def from_server(cls, metadata: Mapping, config: Mapping) -> ModelSpec:
        """Build from the JSON of ``get_model_metadata`` and ``get_model_config``."""
        max_batch = int(config.get("max_batch_size", 0))

        def infos(tensors):
            return tuple(TensorInfo(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])[1 if max_batch else 0:])
                         for t in tensors)

        versions = metadata.get("versions") or [""]
        parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        label_files = {t["name"]: t["label_filename"] for t in config.get("output", []) if t.get("label_filename")}
        return cls(metadata["name"], versions[-1], max_batch, infos(metadata["inputs"]), infos(metadata["outputs"]),
                   parameters, label_files)

    @cached_property
    def class_names(self) -> tuple[str, ...] | None:
        """The names of the config's ``class_names`` parameter, or None; read when first asked, so that
        a malformed parameter fails only the callers that want names."""
        return labels.from_parameters(self.name, self.parameters)

    def describe(self) -> str:
        return ", ".join(str(t) for t in self.inputs)


def _exact_bytes(name: str, array: np.ndarray) -> np.ndarray:
    """The items of a numpy bytes array (``dtype=bytes``, kind ``S``) with every byte they held.

    numpy pads each item with NUL bytes up to the itemsize and strips trailing NULs when an item
    is read, so ``np.array([data], dtype=bytes)`` silently shortens a BMP or WebP image ending in
    NULs. The raw buffer keeps them: with one item, the whole itemsize is the item. With several,
    a shorter item's NULs are numpy's padding for text, but for binary data (an item holding a
    NUL) they cannot be told from the data's own, so that case is refused.
    """
    size = array.dtype.itemsize
    raw = array.tobytes()
    items = [raw[i * size:(i + 1) * size] for i in range(array.size)]
    if array.size > 1:
        items = [item.rstrip(b"\0") for item in items]
        if any(b"\0" in item for item in items) and any(len(item) < size for item in items):
            raise InvalidInput(f"input {name!r}: in a numpy bytes array (dtype=bytes) of several items, binary "
                               "items lose their trailing NUL bytes and they cannot be recovered; pass the bytes "
                               "themselves (a list of bytes) or np.array(..., dtype=object)")
    return np.array(items, dtype=object).reshape(array.shape)


def _as_array(name: str, value, one_item_per_example: bool) -> np.ndarray:
    """The caller's value as an array Triton can take: bytes and str become BYTES items."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.array([bytes(value)], dtype=object)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (bytes, bytearray, str)) for v in value):
        items = np.array([v.encode() if isinstance(v, str) else bytes(v) for v in value], dtype=object)
        return items[:, np.newaxis] if one_item_per_example else items
    array = np.asarray(value)
    if array.dtype.kind == "S":
        return _exact_bytes(name, array)
    if array.dtype.kind == "U" or (array.dtype == np.object_ and array.size and isinstance(array.flat[0], str)):
        return np.vectorize(lambda v: v.encode() if isinstance(v, str) else bytes(v), otypes=[object])(array)
    if array.dtype.kind == "O":
        bad = [type(v).__name__ for v in array.flat if not isinstance(v, (bytes, np.bytes_))][:1]
        if bad:
            raise InvalidInput(f"input {name!r} is an object array holding {bad[0]}; pass bytes or numbers")
    return array


def prepare(spec: ModelSpec, inputs: Mapping[str, object]) -> list[grpcclient.InferInput]:
    """Check ``inputs`` against the model and build the request's tensors.

    A model that batches gets a batch axis added when the caller passes one example (an array of
    exactly the model's dims), as the tutorial's ``np.array([raw_image], dtype=bytes)`` does. A
    BYTES input also takes ``bytes`` (one item) or a list of bytes (for an input of one item per
    example, dims ``[1]``, a batch of them).
    """
    known = {t.name: t for t in spec.inputs}
    unknown = [name for name in inputs if name not in known]
    if unknown:
        raise InvalidInput(f"model {spec.name!r} has no input {unknown[0]!r}; its inputs are: {spec.describe()}")
    missing = [name for name in known if name not in inputs]
    if missing:
        raise InvalidInput(f"model {spec.name!r} needs input {missing[0]!r}; its inputs are: {spec.describe()}")
    tensors = []
    for name, value in inputs.items():
        info = known[name]
        array = _as_array(name, value, bool(spec.max_batch_size) and info.shape == (1,))
        datatype = np_to_triton_dtype(array.dtype)
        if datatype != info.datatype:
            hint = f"convert with .astype(np.{np.dtype(triton_to_np_dtype(info.datatype)).name})" \
                if info.datatype != "BYTES" else "pass bytes, or a list of bytes"
            raise InvalidInput(f"input {name!r} of model {spec.name!r} is {info.datatype}, got {datatype} "
                               f"(numpy {array.dtype}); {hint}")
        if spec.max_batch_size and array.ndim == len(info.shape):
            array = array[np.newaxis]
        expected = ((-1,) if spec.max_batch_size else ()) + info.shape
        if array.ndim != len(expected) or any(e not in (-1, s) for e, s in zip(expected, array.shape)):
            raise InvalidInput(f"input {name!r} of model {spec.name!r} has shape {list(array.shape)}, expected "
                               f"{list(expected)} (-1: any size; the first axis is the batch)")
        if spec.max_batch_size and array.shape[0] > spec.max_batch_size:
            raise InvalidInput(f"input {name!r}: batch of {array.shape[0]} exceeds the model's max_batch_size "
                               f"{spec.max_batch_size}; split it into several requests")
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def results(spec: ModelSpec, result) -> dict[str, np.ndarray]:
    """The outputs of an ``InferResult`` as name -> numpy array."""
    return {t.name: result.as_numpy(t.name) for t in spec.outputs}
