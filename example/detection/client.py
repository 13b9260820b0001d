"""``client.sh``: detect objects in images through the served ``detection`` ensemble.

Sends every image twice, with ``run`` (one at a time) and ``async_run``/``get`` (all at once),
checks both give the same detections, prints those above the score threshold and writes
annotated copies of the images.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from detection import pipeline
from trt_client import client
from trt_client import detections as trt_detections
from trt_client.errors import InferenceFailed, InvalidInput, TrtClientError

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to their JPEG/PNG images."""
    files = []
    for path in paths:
        files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    return files


def detections(results: dict, class_names: Sequence[str] | None, threshold: float, index: int = 0) -> list[dict]:
    """The detections of image ``index`` of a result, above ``threshold``, as JSON-ready dicts."""
    return [{"class": d.class_name, "class_id": d.class_id, "score": round(d.score, 4),
             "box": [round(v, 1) for v in d.box]}
            for d in trt_detections.detections(results, class_names, threshold, index=index)]


PALETTE = [(0, 200, 255), (255, 120, 0), (80, 220, 80), (200, 60, 255), (0, 80, 255), (255, 220, 0)]


def annotate(data: bytes, found: list[dict]) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    for detection in found:
        x1, y1, x2, y2 = (int(round(v)) for v in detection["box"])
        colour = PALETTE[detection["class_id"] % len(PALETTE)]
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        label = f"{detection['class']} {detection['score']:.2f}"
        (width, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        x = max(0, min(x1, image.shape[1] - width - 1))  # the whole label stays inside the image
        cv2.putText(image, label, (x, max(y1 - 4, height + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return image


def run_both_ways(runner: client.Inference, images: list[bytes]) -> list[dict | TrtClientError]:
    """Outputs per image from ``run`` and from ``async_run``/``get``, or the error the server gave that
    image (the others go on); raises if the two ways disagree."""
    synchronous: list = []
    for data in images:
        try:
            synchronous.append(runner.run(input={pipeline.RAW_IMAGE: data}))
        except (InvalidInput, InferenceFailed) as error:
            synchronous.append(error)
    for index, data in enumerate(images):
        runner.async_run(input={pipeline.RAW_IMAGE: data}, input_id=f"image_{index}")
    asynchronous = {}
    for _ in images:
        try:
            input_id, outcome = runner.get(block=True)
        except (InvalidInput, InferenceFailed) as error:
            input_id, outcome = error.input_id, error
        asynchronous[input_id] = outcome
    for index, outcome in enumerate(synchronous):
        other = asynchronous[f"image_{index}"]
        failed = isinstance(outcome, TrtClientError)
        if failed != isinstance(other, TrtClientError) or not failed and any(
                not np.array_equal(outcome[k], other[k]) for k in outcome):
            raise TrtClientError(f"image {index}: run and async_run gave different answers")
    return synchronous


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="client.sh", description="Detect objects with the served model.")
    parser.add_argument("images", nargs="*", type=Path, default=[ROOT / "example" / "test-data"],
                        help="images or folders (default: example/test-data)")
    parser.add_argument("--url", default="127.0.0.1:7001", help="the server's gRPC address")
    parser.add_argument("--model", default=pipeline.ENSEMBLE)
    parser.add_argument("--threshold", type=float, default=0.3, help="lowest score printed and drawn")
    parser.add_argument("--output", type=Path, default=ROOT / "detections", help="folder for the annotated images")
    parser.add_argument("--json", action="store_true", help="print the detections as one JSON document")
    args = parser.parse_args(argv)
    failures = {str(path): "no such file" for path in args.images if not path.exists()}
    files = image_files([path for path in args.images if path.exists()])
    if not files:
        parser.error(f"no images found in {', '.join(str(p) for p in args.images)}")
    try:
        with client.Inference(args.url, args.model, "1") as runner:
            class_names = runner.class_names
            outputs = run_both_ways(runner, [f.read_bytes() for f in files])
    except TrtClientError as error:
        print(f"client.sh: {error}", file=sys.stderr)
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    report = {}
    for path, results in zip(files, outputs):
        if isinstance(results, TrtClientError):
            failures[str(path)] = str(results)
            continue
        found = detections(results, class_names, args.threshold)
        report[str(path)] = found
        cv2.imwrite(str(args.output / f"{path.stem}.jpg"), annotate(path.read_bytes(), found))
        if not args.json:
            print(f"{path.name}: {len(found)} detection(s) with score >= {args.threshold}")
            for d in found:
                print(f"  {d['class']:<10} {d['score']:.3f}  box {d['box']}")
    if args.json:
        print(json.dumps(report))
    else:
        print(f"run and async_run agree on all {len(files)} image(s).")
    print(f"Annotated images: {args.output.resolve()}", file=sys.stderr if args.json else sys.stdout)
    for path, reason in failures.items():
        print(f"client.sh: {path}: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
