"""``bench.sh``: how fast the served detection pipeline is, where the time goes, and against what.

For each concurrency level an asynchronous client (trt_client over gRPC) keeps that many requests
in flight for a fixed time after a warm-up, and measures throughput, latency percentiles and errors,
plus Triton's own per-model statistics over the same window (queue, compute input/infer/output,
average batch size). Baselines in the same run, on the same images: the pipeline in process
(TensorFlow preprocess, ONNX network and postprocess; no server) and a naive server a user might
write instead (Flask + ONNX Runtime, one request at a time). Writes JSON, a Markdown table and a
PNG plot.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detection import dataset, pipeline
from trt_client import client
from trt_client.errors import TrtClientError

ROOT = Path(__file__).resolve().parents[2]
MODELS = (pipeline.PREPROCESS, pipeline.NETWORK, pipeline.POSTPROCESS)


def percentiles(latencies: list[float]) -> dict[str, float]:
    values = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {f"p{p}_ms": round(float(np.percentile(values, p)), 2) for p in (50, 90, 95, 99)}


def triton_statistics(url: str) -> dict:
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(as_json=True)["model_stats"]
    return {s["name"]: s for s in stats if s["name"] in MODELS}


def statistics_delta(before: dict, after: dict) -> dict:
    """Per model over the window: average ms per request in each phase, and the average batch size."""
    table = {}
    for name in MODELS:
        a, b = after.get(name, {}), before.get(name, {})
        inferences = int(a.get("inference_count", 0)) - int(b.get("inference_count", 0))
        executions = int(a.get("execution_count", 0)) - int(b.get("execution_count", 0))
        row = {"inferences": inferences, "executions": executions,
               "average_batch": round(inferences / executions, 2) if executions else None}
        for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
            count = int(a.get("inference_stats", {}).get(phase, {}).get("count", 0)) - \
                int(b.get("inference_stats", {}).get(phase, {}).get("count", 0))
            ns = int(a.get("inference_stats", {}).get(phase, {}).get("ns", 0)) - \
                int(b.get("inference_stats", {}).get(phase, {}).get("ns", 0))
            row[f"{phase}_ms"] = round(ns / count / 1e6, 2) if count else None
        table[name] = row
    return table


def served_level(url: str, images: list[bytes], concurrency: int, seconds: float, warmup: float) -> dict:
    """Keep ``concurrency`` requests in flight. Throughput counts every request finished inside the
    window; latencies are those of the requests sent inside it."""
    latencies, errors, completed, sent = [], 0, 0, {}
    with client.Inference(url, pipeline.ENSEMBLE, "1", max_in_flight=concurrency, timeout=120) as runner:
        counter = 0

        def send():
            nonlocal counter
            sent[counter] = time.perf_counter()
            runner.async_run(input={pipeline.RAW_IMAGE: np.array([images[counter % len(images)]], dtype=bytes)},
                             input_id=counter)
            counter += 1

        began = time.perf_counter()
        start, end = began + warmup, began + warmup + seconds
        for _ in range(concurrency):
            send()
        before, measured_from = None, None
        while sent:
            try:
                input_id, _ = runner.get(block=True, timeout=120)
                failed = False
            except TrtClientError as error:
                if error.input_id is None:
                    raise
                input_id, failed = error.input_id, True
            now = time.perf_counter()
            issued = sent.pop(input_id)
            if before is None and now >= start:
                before, measured_from = triton_statistics(url), now
            if before is not None and now <= end:
                completed += not failed
                errors += failed
                if not failed and issued >= measured_from:
                    latencies.append(now - issued)
            if now < end:
                send()
        after = triton_statistics(url)
    window = min(end, time.perf_counter()) - (measured_from or start)
    return {"concurrency": concurrency, "throughput": round(completed / window, 2), **percentiles(latencies),
            "errors": errors, "requests": completed, "triton": statistics_delta(before or after, after)}


def in_process_limit(repository: Path, images: list[bytes], input_size: int, seconds: float) -> dict:
    """The same three stages in one process, no server: the best of batch 1 and batch 8."""
    import onnxruntime as ort

    from detection.preprocess import TensorFlowPreprocess

    preprocess = TensorFlowPreprocess(input_size)
    network = ort.InferenceSession(str(repository / pipeline.NETWORK / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    postprocess = ort.InferenceSession(str(repository / pipeline.POSTPROCESS / "1" / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
    best = {}
    for batch in (1, 8):
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            chunk = [images[(done + i) % len(images)] for i in range(batch)]
            image, meta_affine, meta_size = preprocess(chunk)
            hm, wh, reg = network.run(list(pipeline.HEADS), {pipeline.IMAGE: image})
            postprocess.run(None, {"hm": hm, "wh": wh, "reg": reg, pipeline.META_AFFINE: meta_affine,
                                   pipeline.META_SIZE: meta_size})
            done += batch
        rate = done / (time.perf_counter() - began)
        if rate > best.get("throughput", 0):
            best = {"throughput": round(rate, 2), "batch": batch}
    return best


def _naive_server(repository: str, input_size: int, port: int) -> None:
    """What a user might write without Triton: Flask, ONNX Runtime, one request at a time."""
    import onnxruntime as ort
    from flask import Flask, jsonify, request

    from detection import letterbox

    network = ort.InferenceSession(f"{repository}/{pipeline.NETWORK}/1/model.onnx", providers=["CPUExecutionProvider"])
    postprocess = ort.InferenceSession(f"{repository}/{pipeline.POSTPROCESS}/1/model.onnx",
                                       providers=["CPUExecutionProvider"])
    app = Flask("naive")

    @app.post("/detect")
    def detect():
        image, meta_affine, meta_size = letterbox.preprocess(request.get_data(), input_size)
        hm, wh, reg = network.run(list(pipeline.HEADS), {pipeline.IMAGE: image[None]})
        boxes, scores, classes = postprocess.run(None, {"hm": hm, "wh": wh, "reg": reg,
                                                        pipeline.META_AFFINE: meta_affine[None],
                                                        pipeline.META_SIZE: meta_size[None]})
        return jsonify({"boxes": boxes[0].tolist(), "scores": scores[0].tolist(), "classes": classes[0].tolist()})

    app.run(host="127.0.0.1", port=port, threaded=False)


def naive_level(port: int, images: list[bytes], concurrency: int, seconds: float, warmup: float) -> dict:
    """As ``served_level``, with one blocking HTTP client thread per request in flight."""
    latencies, errors, completed = [], 0, 0
    began = time.perf_counter()
    start, end = began + warmup, began + warmup + seconds
    lock = threading.Lock()

    def worker(offset: int):
        nonlocal errors, completed
        index = offset
        while time.perf_counter() < end:
            issued = time.perf_counter()
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/detect", data=images[index % len(images)],
                                                 method="POST")
                with urllib.request.urlopen(request, timeout=120) as response:
                    response.read()
                ok = True
            except OSError:
                ok = False
            now = time.perf_counter()
            if start <= now <= end:
                with lock:
                    completed += ok
                    errors += not ok
                    if ok and issued >= start:
                        latencies.append(now - issued)
            index += concurrency

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return {"concurrency": concurrency, "throughput": round(completed / seconds, 2), **percentiles(latencies),
            "errors": errors}


def plot(served: list[dict], naive: list[dict], limit: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    levels = [row["concurrency"] for row in served]
    left.plot(levels, [row["throughput"] for row in served], "o-", label="Triton (trt_client, gRPC)")
    if naive:
        left.plot([row["concurrency"] for row in naive], [row["throughput"] for row in naive], "s--",
                  label="Flask + ONNX Runtime")
    left.axhline(limit, color="gray", linestyle=":", label="in process (limit)")
    left.set(xscale="log", xlabel="concurrency", ylabel="requests/s", title="throughput")
    left.set_xticks(levels, [str(level) for level in levels])
    left.legend()
    for p in (50, 90, 99):
        right.plot(levels, [row[f"p{p}_ms"] for row in served], "o-", label=f"p{p}")
    right.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="latency (Triton)")
    right.set_xticks(levels, [str(level) for level in levels])
    right.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def markdown(report: dict) -> str:
    lines = [report["title"], "",
             f"In process (no server, best batch {report['in_process']['batch']}): "
             f"**{report['in_process']['throughput']} requests/s**.", "",
             "| concurrency | Triton req/s | p50 ms | p90 ms | p95 ms | p99 ms | errors | vs in process | Flask req/s | "
             "Triton / Flask | network batch | network queue ms | network infer ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    naive = {row["concurrency"]: row for row in report.get("naive", [])}
    for row in report["served"]:
        other = naive.get(row["concurrency"])
        net = row["triton"][pipeline.NETWORK]
        naive_rate = other["throughput"] if other else "-"
        versus_naive = f"{row['throughput'] / other['throughput']:.2f}x" if other and other["throughput"] else "-"
        lines.append(
            f"| {row['concurrency']} | {row['throughput']} | {row['p50_ms']} | {row['p90_ms']} | {row['p95_ms']} | "
            f"{row['p99_ms']} | {row['errors']} | {row['throughput'] / report['in_process']['throughput']:.2f}x | "
            f"{naive_rate} | {versus_naive} | {net['average_batch']} | {net['queue_ms']} | {net['compute_infer_ms']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:7001", help="the served detection ensemble (gRPC)")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository",
                        help="the repository the server runs (for the baselines)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--seconds", type=float, default=20, help="measured time per level")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--images", type=int, default=32, help="test-split images sent round-robin")
    parser.add_argument("--input-size", type=int, default=pipeline.INPUT_SIZE)
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--naive-port", type=int, default=7010, help="the Flask baseline's port (0: any free one)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance", help="report folder")
    parser.add_argument("--name", default="cpu", help="report file names: NAME.json, NAME.md, NAME.png")
    parser.add_argument("--device", default=f"{platform.machine()} CPU, {os.cpu_count()} cores")
    args = parser.parse_args(argv)
    images = [dataset.generate(dataset.SPLIT_SEEDS["test"], i).jpeg for i in range(args.images)]
    served = [served_level(args.url, images, c, args.seconds, args.warmup)
              for c in tqdm(args.concurrency, desc="served", unit="level")]
    in_process, naive = {"throughput": float("nan"), "batch": None}, []
    if args.baselines:
        if args.naive_port == 0:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                args.naive_port = probe.getsockname()[1]
        in_process = in_process_limit(args.model_repository, images, args.input_size, args.seconds)
        process = multiprocessing.get_context("spawn").Process(
            target=_naive_server, args=(str(args.model_repository), args.input_size, args.naive_port), daemon=True)
        process.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{args.naive_port}/", timeout=1)
                except urllib.error.HTTPError:
                    break
                except OSError:
                    time.sleep(0.5)
            naive = [naive_level(args.naive_port, images, c, args.seconds, args.warmup)
                     for c in tqdm([c for c in args.concurrency if c <= 16], desc="naive server", unit="level")]
        finally:
            process.terminate()
            process.join(10)
    title = (f"Detection ensemble, input {args.input_size}, {args.device}, {time.strftime('%Y-%m-%d')}; "
             f"{args.seconds:g} s per level after {args.warmup:g} s warm-up, {len(images)} test images round-robin.")
    report = {"title": title, "device": args.device, "date": time.strftime("%Y-%m-%d"), "served": served,
              "in_process": in_process, "naive": naive}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.output / f"{args.name}.md").write_text(markdown(report))
    plot(served, naive, in_process["throughput"], args.output / f"{args.name}.png", title)
    print(markdown(report))
    print(f"Report: {args.output / args.name}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
