"""COCO mAP of the example detector on a generated split, in process and through the server.

    python example/detection/evaluate.py --seed 3 --num-images 200 [--url 127.0.0.1:7001]

Generates images ``0..N-1`` of the dataset of ``--seed`` with their boxes, detects them with the
PyTorch model in process (OpenCV preprocess) and, with ``--url``, through the served ``detection``
ensemble from JPEG bytes with trt_client; scores both with pycocotools (mAP@[.5:.95], mAP@.5,
per-class AP), prints a table, writes it to ``--report`` and prints, as its last line, one JSON
object: ``map`` and ``map50`` (served, or in process without ``--url``), ``inprocess_map``...
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the example importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from detection import dataset, pipeline
from detection.inference import InProcessPipeline
from detection.network import load_network

HERE = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = HERE / "weights" / "centernet_dlav0_34.pth"


def coco_detections(outputs: dict[str, np.ndarray], image_id: int) -> list[dict]:
    """One image's top-K detections as COCO results (category id = class + 1)."""
    return [{"image_id": image_id, "category_id": int(label) + 1, "score": float(score),
             "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
            for (x1, y1, x2, y2), score, label in zip(outputs[pipeline.BOXES][0], outputs[pipeline.SCORES][0],
                                                      outputs[pipeline.CLASSES][0])]


def score(ground_truth: dict, results: list[dict]) -> dict:
    """mAP@[.5:.95], mAP@.5 and per-class AP (pycocotools' own printout goes to stderr)."""
    with contextlib.redirect_stdout(sys.stderr):
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


def in_process(model: InProcessPipeline, images: list[bytes], batch: int = 8) -> list[dict]:
    results = []
    for start in tqdm(range(0, len(images), batch), desc="in process", unit="batch"):
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
        for _ in tqdm(images, desc=f"served ({url})", unit="image"):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=dataset.SPLIT_SEEDS["test"], help="dataset seed (test split: 3)")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--url", help="also evaluate the served ensemble at this gRPC address")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--input-size", type=int, default=pipeline.INPUT_SIZE)
    parser.add_argument("--report", type=Path, default=HERE / "weights" / "evaluation.md")
    args = parser.parse_args(argv)
    ground_truth = dataset.coco_split(args.seed, args.num_images)
    images = [dataset.generate(args.seed, i).jpeg for i in range(args.num_images)]
    network, _ = load_network(args.checkpoint)
    rows = {"in process (PyTorch, OpenCV preprocess)": score(ground_truth, in_process(
        InProcessPipeline(network, args.input_size), images))}
    if args.url:
        rows[f"served (Triton ensemble, {args.url})"] = score(ground_truth, served(args.url, images))
    text = table(rows)
    print(text)
    heading = (f"Evaluation of `{args.checkpoint.name}` on {args.num_images} generated images (seed {args.seed}), "
               f"input {args.input_size}, COCO metrics by pycocotools.")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(f"{heading}\n\n{text}\n")
    print(f"Report written to {args.report}")
    inprocess, final = next(iter(rows.values())), list(rows.values())[-1]
    print(json.dumps({"map": final["map"], "map50": final["map50"], "inprocess_map": inprocess["map"],
                      "inprocess_map50": inprocess["map50"], "served": bool(args.url), "seed": args.seed,
                      "num_images": args.num_images, "per_class": final["per_class"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
