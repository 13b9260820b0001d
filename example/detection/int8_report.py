"""FP32 against INT8 on this machine, in one run: network speed in ONNX Runtime and served mAP.

Network-only latency and throughput in ONNX Runtime (same threads, same inputs), and COCO mAP of
the served pipeline with each.

    python example/detection/int8_report.py [--num-images 100] [--threads 2] [--output reports/]

Builds each repository with ``convert.sh``, as a user would, and writes ``int8.md`` and ``int8.json``
to ``--output`` (default: the ignored ``reports/``; the shipped record is ``docs/performance/int8.*``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the example importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from detection import dataset, pipeline
from detection.accuracy import score, served
from trtis import quiet
from trtis.serving import serve

ROOT = Path(__file__).resolve().parents[2]
CONVERT = ROOT / "example" / "detection" / "convert.sh"


def network_speed(model: Path, batch1: np.ndarray, batch8: np.ndarray, threads: int, runs: int) -> dict:
    """Latency (p50, batch 1) and throughput (batch 8) of one ONNX model in ONNX Runtime on the CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for feed in (batch1, batch8):
        session.run(None, {pipeline.IMAGE: feed})
    latency = []
    for _ in tqdm(range(runs), desc=f"{model.parent.parent.name} batch 1", leave=False):
        began = time.perf_counter()
        session.run(None, {pipeline.IMAGE: batch1})
        latency.append(time.perf_counter() - began)
    began = time.perf_counter()
    for _ in tqdm(range(max(2, runs // 4)), desc=f"{model.parent.parent.name} batch 8", leave=False):
        session.run(None, {pipeline.IMAGE: batch8})
    per_batch = (time.perf_counter() - began) / max(2, runs // 4)
    return {"latency_p50_ms": round(1000 * float(np.median(latency)), 1),
            "throughput_images_per_s": round(len(batch8) / per_batch, 2)}


def served_map(repository: Path, images: list[bytes], ground_truth: dict, state: Path) -> dict:
    with serve(repository, state_dir=state) as server:
        return score(ground_truth, served(server.grpc_url, images))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100, help="test-split images for the mAP")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--output", type=Path, default=ROOT / "reports", help="report folder")
    parser.add_argument("--verbose", action="store_true", help="log every step, third-party libraries' notices too")
    args = parser.parse_args(argv)
    quiet.setup(args.verbose)
    from detection.preprocess import TensorFlowPreprocess  # TensorFlow loads after setup: --verbose shows its log

    seed = dataset.SPLIT_SEEDS["test"]
    ground_truth = dataset.coco_split(seed, args.num_images)
    images = [dataset.generate(seed, i).jpeg for i in range(args.num_images)]
    preprocessed = TensorFlowPreprocess(pipeline.INPUT_SIZE)(images[:8])[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fmt, form in (("FP32 ONNX", "onnx", None), ("INT8 ONNX, CPU form (U8S8)", "onnx-int8", "cpu"),
                                ("INT8 ONNX, TensorRT form (symmetric S8S8)", "onnx-int8", "tensorrt")):
            repo = Path(tmp) / (form or fmt)
            # The TensorRT form is served by ONNX Runtime here, as TensorRT would get it.
            subprocess.run([str(CONVERT), "--output", str(repo), "--network-format", fmt,
                            "--calibration-images", str(args.calibration_images),
                            *(["--int8-form", form] if form else []), *(["--verbose"] if args.verbose else [])],
                           check=True, stdout=subprocess.DEVNULL)
            speed = network_speed(repo / pipeline.NETWORK / "1" / "model.onnx", preprocessed[:1], preprocessed,
                                  args.threads, args.runs)
            accuracy = served_map(repo, images, ground_truth, Path(tmp) / f"{fmt}-state")
            results[name] = {**speed, "served_map": round(accuracy["map"], 4), "served_map50": round(accuracy["map50"], 4)}
    fp32, int8 = results["FP32 ONNX"], results["INT8 ONNX, CPU form (U8S8)"]
    ratio = {"latency_speedup": round(fp32["latency_p50_ms"] / int8["latency_p50_ms"], 2),
             "throughput_speedup": round(int8["throughput_images_per_s"] / fp32["throughput_images_per_s"], 2),
             "map_drop_points": round(100 * (fp32["served_map"] - int8["served_map"]), 2)}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; onnxruntime {ort.__version__}"
    lines = [f"Network only: ONNX Runtime on the CPU, {args.threads} threads, input {pipeline.INPUT_SIZE}, the same "
             f"preprocessed test images for both; latency = median of {args.runs} batch-1 runs. mAP: the served "
             f"ensemble on {args.num_images} test-split images (seed {seed}). Calibration: MinMax, "
             f"{args.calibration_images} validation-split images. Machine: {machine}; {time.strftime('%Y-%m-%d')}.",
             "", "| network | latency p50 (ms, batch 1) | throughput (images/s, batch 8) | served mAP@[.5:.95] | served mAP@.5 |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in results.items():
        lines.append(f"| {name} | {row['latency_p50_ms']} | {row['throughput_images_per_s']} | {row['served_map']} | "
                     f"{row['served_map50']} |")
    lines += ["", f"INT8 (CPU form) / FP32: {ratio['latency_speedup']}x lower latency, {ratio['throughput_speedup']}x "
              f"the throughput, mAP@[.5:.95] {abs(ratio['map_drop_points']):.2f} points "
              f"{'lower' if ratio['map_drop_points'] >= 0 else 'higher'}."]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "int8.md").write_text("\n".join(lines) + "\n")
    (args.output / "int8.json").write_text(json.dumps({"machine": machine, "threads": args.threads, "results": results,
                                                  "ratios": ratio, "date": time.strftime("%Y-%m-%d")}, indent=2) + "\n")
    print("\n".join(lines))
    print(f"Report: {args.output / 'int8'}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
