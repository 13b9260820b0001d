"""COCO mAP of the example detector on a generated split, in process and through the server.

    python example/detection/evaluate.py --seed 3 --num-images 200 [--url 127.0.0.1:7001]

Generates images ``0..N-1`` of the dataset of ``--seed`` with their boxes, detects them with the
PyTorch model in process (OpenCV preprocess) and, with ``--url``, through the served ``detection``
ensemble from JPEG bytes with trt_client; scores both with pycocotools (mAP@[.5:.95], mAP@.5,
per-class AP), prints a table (and writes it to ``--report`` when given: the shipped record
``weights/evaluation.md`` changes only when named there) and prints, as its last line, one JSON
object: ``map`` and ``map50`` (served, or in process without ``--url``), ``inprocess_map``...
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the example importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detection import dataset, pipeline
from detection.accuracy import in_process, score, served, table
from detection.network import DEFAULT_CHECKPOINT, load_network
from detection.reference import ReferencePipeline
from trtis import quiet



def read_split(folder: Path) -> tuple[dict, list[bytes]]:
    """The COCO ground truth and the JPEG bytes (in image id order, ids 1..N) of a written split."""
    annotations = sorted(folder.glob("instances_*.json"))
    if len(annotations) != 1:
        raise SystemExit(f"evaluate.py: {folder} must hold one instances_*.json (python -m detection.dataset writes it)")
    ground_truth = json.loads(annotations[0].read_text())
    entries = sorted(ground_truth["images"], key=lambda image: image["id"])
    if [image["id"] for image in entries] != list(range(1, len(entries) + 1)):
        raise SystemExit(f"evaluate.py: {annotations[0]} must number its images 1..N")
    return ground_truth, [(folder / "images" / image["file_name"]).read_bytes() for image in entries]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=dataset.SPLIT_SEEDS["test"], help="dataset seed (test split: 3)")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--url", help="also evaluate the served ensemble at this gRPC address")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--input-size", type=int, default=pipeline.INPUT_SIZE)
    parser.add_argument("--report", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--dataset", type=Path, help="a split written by `python -m detection.dataset` (images/ and "
                        "instances_*.json) instead of generating one")
    parser.add_argument("--verbose", action="store_true", help="log every step, third-party libraries' notices too")
    args = parser.parse_args(argv)
    quiet.setup(args.verbose)
    if args.dataset:
        ground_truth, images = read_split(args.dataset)
        args.num_images = len(images)
    else:
        ground_truth = dataset.coco_split(args.seed, args.num_images)
        images = [dataset.generate(args.seed, i).jpeg for i in range(args.num_images)]
    network, _ = load_network(args.checkpoint)
    rows = {"in process (PyTorch, OpenCV preprocess)": score(ground_truth, in_process(
        ReferencePipeline(network, args.input_size), images))}
    if args.url:
        rows[f"served (Triton ensemble, {args.url})"] = score(ground_truth, served(args.url, images))
    text = table(rows)
    print(text)
    heading = (f"Evaluation of `{args.checkpoint.name}` on {args.num_images} generated images (seed {args.seed}), "
               f"input {args.input_size}, COCO metrics by pycocotools.")
    if args.report:
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
