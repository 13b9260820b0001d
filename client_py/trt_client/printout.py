"""What ``trt-client`` prints for its files: a table for people, or one JSON document for machines."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trt_client.detections import CLASSES, detections, is_detection
from trt_client.labels import name_classes

FIRST_VALUES = 6  # of an output that is not detections


@dataclass(frozen=True)
class Answer:
    """One file's outcome: the model's outputs for it, or why there are none."""

    file: str
    outputs: Mapping[str, np.ndarray] | None = None
    error: str | None = None


def _aligned(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """The rows as lines of left-aligned columns, two spaces apart."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [(indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths))).rstrip() for row in rows]


def _value(value) -> str:
    if isinstance(value, bytes):
        text = repr(value[:32])
        return text + "..." if len(value) > 32 else text
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _detection_lines(answer: Answer, class_names: Sequence[str] | None, threshold: float, top_k: int) -> list[str]:
    found = detections(answer.outputs, class_names, threshold)
    cut = f", the {top_k} best shown (--top-k)" if len(found) > top_k else ""
    lines = [f"{answer.file}: {len(found)} detection(s) with score >= {threshold:g}{cut}"]
    if found:
        rows = [["class", "score", "box (x1, y1, x2, y2)"]]
        rows += [[d.class_name, f"{d.score:.3f}", ", ".join(f"{v:.1f}" for v in d.box)] for d in found[:top_k]]
        lines += _aligned(rows)
    return lines


def _output_lines(answer: Answer, datatypes: Mapping[str, str]) -> list[str]:
    rows = [["output", "datatype", "shape", "values"]]
    for name, array in answer.outputs.items():
        flat = np.asarray(array).ravel()
        values = ", ".join(_value(v) for v in flat[:FIRST_VALUES].tolist())
        more = f", ... ({flat.size} values)" if flat.size > FIRST_VALUES else ""
        rows.append([name, datatypes.get(name, str(array.dtype)), str(list(array.shape)), values + more])
    return [answer.file, *_aligned(rows)]


def table(answers: Sequence[Answer], class_names: Sequence[str] | None, datatypes: Mapping[str, str],
          threshold: float, top_k: int) -> str:
    """Per file: its detections above ``threshold`` (at most ``top_k``) as class, score and box; for
    a model whose outputs are not detections, each output's datatype, shape and first values; or
    the file's error."""
    lines = []
    for answer in answers:
        if answer.error is not None:
            lines.append(f"{answer.file}: error: {answer.error}")
        elif is_detection(answer.outputs):
            lines += _detection_lines(answer, class_names, threshold, top_k)
        else:
            lines += _output_lines(answer, datatypes)
    return "\n".join(lines)


def _decode(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def json_document(model: str, answers: Sequence[Answer], class_names: Sequence[str] | None) -> str:
    """``{"model", "class_names", "results": [{"file", "outputs"[, "named_classes"]} or {"file", "error"}]}``;
    ``named_classes`` is the ``classes`` output of detections with names for indices, where names are known."""
    results = []
    for answer in answers:
        if answer.error is not None:
            results.append({"file": answer.file, "error": answer.error})
            continue
        result = {"file": answer.file, "outputs": {name: value.tolist() for name, value in answer.outputs.items()}}
        if class_names is not None and is_detection(answer.outputs):
            result["named_classes"] = name_classes(answer.outputs[CLASSES], class_names).tolist()
        results.append(result)
    names = None if class_names is None else list(class_names)
    return json.dumps({"model": model, "class_names": names, "results": results}, default=_decode)
