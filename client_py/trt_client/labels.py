"""A model's class names, and turning the class indices of its results into them.

The names come from the model config's ``class_names`` parameter, a JSON list of strings (the
detection ensemble sets it). An output's ``label_filename`` names a file in the model's folder,
but Triton has no API that serves that file, so a model that names its classes only there keeps
them as indices on the client.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from trt_client.errors import TrtClientError

PARAMETER = "class_names"


def from_parameters(model: str, parameters: Mapping[str, str]) -> tuple[str, ...] | None:
    """The names in the config's ``class_names`` parameter; None when the config has none."""
    text = parameters.get(PARAMETER)
    if text is None:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise TrtClientError(f"model {model!r}: its {PARAMETER!r} parameter must be a JSON list of strings, such as "
                             f"[\"cat\", \"dog\"], got {text[:80]!r}; fix it in the model's config.pbtxt")
    return tuple(names)


def name_classes(classes: np.ndarray | Sequence, names: Sequence[str] | None) -> np.ndarray:
    """Each class index replaced by its name, same shape (numpy ``str``); an index that has no name
    (no names known, or out of their range) becomes its number as text."""
    array = np.asarray(classes)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise ValueError(f"class indices must be integers, got a {array.dtype} array")
    names = names or ()
    named = [names[i] if 0 <= i < len(names) else str(i) for i in array.ravel().tolist()]
    return np.array(named, dtype=str).reshape(array.shape)
