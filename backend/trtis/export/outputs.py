"""A module's outputs, whatever their structure, as the tensors a Triton config names.

Models return a tensor, a tuple, a dict, a dataclass or a ``transformers`` ``ModelOutput``, often
nested. Every format needs a flat tuple of tensors in the order of ``output_names``, and a program
that returns a library's own class cannot be loaded where that library is not imported. So the
export wraps the module in ``Selected``: it flattens what the module returns to named leaves and
returns the ones the config names, as a tuple, in every format.

Names: a leaf's name is its path, a dict's key (or a dataclass's field) and a sequence's index,
joined by dots (``last_hidden_state``, ``0.boxes``); ``None`` values are left out. Output names
that are all leaf names choose those leaves, in the names' order (any subset). Otherwise, when the
module returns unnamed tensors (one, or a tuple), the names label them in order.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

WRAPPER_HELP = ("wrap the module so forward returns batched tensors (docs/converter.md, 'Outputs: dicts, "
                "ModelOutputs and detectors')")


def leaves(outputs: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf of ``outputs`` with its path, in the order the module returns them."""
    if isinstance(outputs, torch.Tensor):
        return [(prefix, outputs)]
    if isinstance(outputs, Mapping):
        items = list(outputs.items())
    elif dataclasses.is_dataclass(outputs) and not isinstance(outputs, type):
        items = [(f.name, getattr(outputs, f.name)) for f in dataclasses.fields(outputs)]
    elif isinstance(outputs, (tuple, list)):
        items = list(enumerate(outputs))
    else:
        return [(prefix, outputs)]
    return [leaf for key, value in items if value is not None
            for leaf in leaves(value, f"{prefix}.{key}" if prefix else str(key))]


def _unnamed(path: str) -> bool:
    """A leaf reached through sequences only (``""``, ``1``, ``0.1``): it has no name of its own."""
    return all(part.isdigit() for part in path.split(".")) if path else True


def output_paths(outputs: Any, names: Sequence[str]) -> list[str]:
    """The path of each output name in ``outputs`` (what the module returned on the example),
    or a ``ValueError`` that lists what the module returns and says what to change."""
    found = leaves(outputs)
    available = [path for path, _ in found]
    if all(name in available for name in names):
        chosen = list(names)
    elif len(found) == len(names) and all(_unnamed(path) for path in available):
        chosen = available
    else:
        listed = ", ".join(f"{path or '(the output)'}: {_kind(value)}" for path, value in found)
        raise ValueError(f"output names {list(names)} do not match what the module returns ({listed}): give the "
                         f"names of these leaves (a dict's keys, paths such as 0.boxes), or for unnamed tensors one "
                         f"name each; a module that returns one dict per image has no batch axis: {WRAPPER_HELP}")
    values = dict(found)
    for name, path in zip(names, chosen):
        if not isinstance(values[path], torch.Tensor):
            raise ValueError(f"output {name!r} is {_kind(values[path])}, not a tensor: {WRAPPER_HELP}")
    return chosen


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)}"
    return f"a {type(value).__name__}"


class Selected(torch.nn.Module):
    """``module`` returning the leaves at ``paths`` as a tuple of tensors (see the module docstring)."""

    def __init__(self, module: torch.nn.Module, paths: Sequence[str]):
        super().__init__()
        self.module, self.paths = module, list(paths)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.pick(self.module(*inputs))

    def pick(self, outputs: Any) -> tuple[torch.Tensor, ...]:
        """The chosen leaves of what the wrapped module returned."""
        found = dict(leaves(outputs))
        missing = [path for path in self.paths if path not in found]
        if missing:
            raise ValueError(f"the module no longer returns {missing} at these input shapes: {WRAPPER_HELP}")
        return tuple(found[path] for path in self.paths)
