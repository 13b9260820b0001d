"""COCO accuracy of the detector: detections as COCO results, scored by pycocotools, in process or
served (what evaluate.py and int8_report.py report)."""
from __future__ import annotations

import contextlib
import os

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
import torch
from tqdm import tqdm

from detection import pipeline
from detection.reference import ReferencePipeline


def coco_detections(outputs: dict[str, np.ndarray], image_id: int) -> list[dict]:
    """One image's top-K detections as COCO results (category id = class + 1)."""
    return [{"image_id": image_id, "category_id": int(label) + 1, "score": float(score),
             "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
            for (x1, y1, x2, y2), score, label in zip(outputs[pipeline.BOXES][0], outputs[pipeline.SCORES][0],
                                                      outputs[pipeline.CLASSES][0])]


def score(ground_truth: dict, results: list[dict]) -> dict:
    """mAP@[.5:.95], mAP@.5 and per-class AP (pycocotools' own printout is silenced)."""
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        coco = COCO()
        coco.dataset = ground_truth
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(results) if results else COCO(), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # IoU x recall x class, all areas, 100 dets
    per_class = {}
    for k, category in enumerate(ground_truth["categories"]):
        values = precision[:, :, k]
        values = values[values > -1]
        per_class[category["name"]] = float(values.mean()) if values.size else float("nan")
    return {"map": float(evaluation.stats[0]), "map50": float(evaluation.stats[1]), "per_class": per_class}


class OnDevice(torch.nn.Module):
    """``network`` on ``device``: its input moved there, its heads back to the CPU in FP32 for the decoder."""

    def __init__(self, network: torch.nn.Module, device: str):
        super().__init__()
        self.network, self.device = network, device

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image = image.to(self.device)
        if self.device != "cpu":
            image = image.contiguous(memory_format=torch.channels_last)
        return tuple(head.float().cpu() for head in self.network(image))


def in_process(model: ReferencePipeline, images: list[bytes], batch: int = 8) -> list[dict]:
    results = []
    for start in tqdm(range(0, len(images), batch), desc="in process", unit="batch", leave=False):
        outputs = model(images[start:start + batch])
        for offset in range(len(outputs[pipeline.SCORES])):
            one = {k: v[offset:offset + 1] for k, v in outputs.items()}
            results += coco_detections(one, start + offset + 1)
    return results


def served(url: str, images: list[bytes]) -> list[dict]:
    from trt_client import client

    results = []
    with client.Inference(url, pipeline.ENSEMBLE, "1", max_in_flight=16) as runner:
        for index, data in enumerate(images):
            runner.async_run(input={pipeline.RAW_IMAGE: np.array([data], dtype=bytes)}, input_id=index + 1)
        for _ in tqdm(images, desc=f"served ({url})", unit="image", leave=False):
            image_id, outputs = runner.get(block=True)
            results += coco_detections(outputs, image_id)
    return results


def table(rows: dict[str, dict]) -> str:
    classes = list(next(iter(rows.values()))["per_class"])
    lines = ["| pipeline | mAP@[.5:.95] | mAP@.5 | " + " | ".join(classes) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in classes) + " |"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['map']:.4f} | {row['map50']:.4f} | "
                     + " | ".join(f"{row['per_class'][c]:.3f}" for c in classes) + " |")
    return "\n".join(lines)
