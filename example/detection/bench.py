"""``bench.sh``: how fast the served detection pipeline is, where the time goes, and against what.

For each concurrency level an asynchronous client (trt_client over gRPC) keeps that many requests
in flight for a fixed time after a warm-up, and measures throughput, latency percentiles and errors,
plus Triton's own per-model statistics over the same window (queue, compute input/infer/output,
average batch size) and, where there are NVIDIA GPUs, their utilisation and memory. Baselines in
the same run, on the same images, with the runtimes of the repository's own models (stages.py):
the pipeline in process (no server), the network alone (batch sweep), and a naive server a user
might write instead (Flask, one request at a time). Writes JSON, a Markdown table and a PNG plot.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detection import pipeline
from detection.client import image_files
from detection.stages import Stages
from detection.stages import load as load_stages
from trt_client import client
from trtis.serving import launcher
from trt_client.errors import TrtClientError

ROOT = Path(__file__).resolve().parents[2]
MODELS = (pipeline.PREPROCESS, pipeline.NETWORK, pipeline.POSTPROCESS)


def load_images(image_dir: list[Path] | None, count: int) -> tuple[list[bytes], str]:
    """The images to send, and how the report names them: those given, or generated test images."""
    if image_dir:
        images = [path.read_bytes() for path in image_files(image_dir)]
        return images, f"{len(images)} images of {', '.join(str(p) for p in image_dir)}"
    from detection import dataset

    return [dataset.generate(dataset.SPLIT_SEEDS["test"], i).jpeg for i in range(count)], f"{count} generated test images"


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


class GpuMonitor:
    """Samples ``nvidia-smi`` in the background between two wall-clock times: per GPU, mean
    utilisation and most memory in use. Reports nothing where there is no NVIDIA GPU."""

    QUERY = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"]

    def __init__(self, start: float, end: float, interval: float = 0.5):
        self.start, self.end, self.interval, self.samples = start, end, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def read() -> list[tuple[int, float, float, float]]:
        if shutil.which("nvidia-smi") is None:
            return []
        result = subprocess.run(GpuMonitor.QUERY, capture_output=True, text=True, timeout=30)
        rows = [line.split(",") for line in result.stdout.strip().splitlines()] if result.returncode == 0 else []
        return [(int(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows if len(r) == 4]

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            if self.start <= time.time() <= self.end:
                self.samples += self.read()

    def __enter__(self) -> "GpuMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> list[dict]:
        gpus = sorted({s[0] for s in self.samples})
        return [{"gpu": g, "utilization_percent": round(float(np.mean([s[1] for s in self.samples if s[0] == g])), 1),
                 "memory_used_mib": max(s[2] for s in self.samples if s[0] == g),
                 "memory_total_mib": max(s[3] for s in self.samples if s[0] == g)} for g in gpus]


def _client(url: str, images: list[bytes], concurrency: int, start: float, end: float) -> dict:
    """One asynchronous client keeping ``concurrency`` requests in flight until ``end`` (wall clock).
    It counts the requests finished between ``start`` and ``end``, and the latencies of those also
    sent after ``start``."""
    latencies, errors, completed, sent = [], 0, 0, {}
    with client.Inference(url, pipeline.ENSEMBLE, "1", max_in_flight=concurrency, timeout=120) as runner:
        counter = 0

        def send():
            nonlocal counter
            sent[counter] = time.time()
            runner.async_run(input={pipeline.RAW_IMAGE: np.array([images[counter % len(images)]], dtype=bytes)},
                             input_id=counter)
            counter += 1

        for _ in range(concurrency):
            send()
        while sent:
            try:
                input_id, _ = runner.get(block=True, timeout=120)
                failed = False
            except TrtClientError as error:
                if error.input_id is None:
                    raise
                input_id, failed = error.input_id, True
            now = time.time()
            issued = sent.pop(input_id)
            if start <= now <= end:
                completed += not failed
                errors += failed
                if not failed and issued >= start:
                    latencies.append(now - issued)
            if now < end:
                send()
    return {"completed": completed, "errors": errors, "latencies": latencies}


def _statistics_at(moment: float, url: str) -> dict:
    time.sleep(max(0.0, moment - time.time()))
    return triton_statistics(url)


def served_level(url: str, images: list[bytes], concurrency: int, seconds: float, warmup: float,
                 clients: int = 1) -> dict:
    """``clients`` asynchronous clients (separate processes when more than one), each keeping
    ``concurrency`` requests in flight; measured for ``seconds`` after ``warmup``. Triton's
    statistics are sampled at both ends of that window."""
    start = time.time() + warmup + (3 if clients > 1 else 0)  # spawned clients take a moment to import
    end = start + seconds
    with GpuMonitor(start, end) as gpus, ThreadPoolExecutor(2) as sampler:
        before, after = sampler.submit(_statistics_at, start, url), sampler.submit(_statistics_at, end, url)
        arguments = [[value] * clients for value in (url, images, concurrency, start, end)]
        if clients == 1:
            results = [_client(*(column[0] for column in arguments))]
        else:
            with ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(_client, *arguments))
        statistics = statistics_delta(before.result(), after.result())
    completed = sum(r["completed"] for r in results)
    return {"concurrency": concurrency, "clients": clients, "throughput": round(completed / seconds, 2),
            **percentiles([latency for r in results for latency in r["latencies"]]),
            "errors": sum(r["errors"] for r in results), "requests": completed, "triton": statistics,
            "gpus": gpus.summary()}


def _rate(work, batch: int, seconds: float) -> float:
    """Items per second of ``work(i)`` (one batch of ``batch`` items) run back to back for ``seconds``."""
    work(0)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        work(done)
        done += batch
    return done / (time.perf_counter() - began)


def in_process_limit(stages: Stages, images: list[bytes], batches: list[int], seconds: float) -> dict:
    """The three stages in this process, no server: the best batch size."""
    best = {}
    for batch in batches:
        rate = _rate(lambda i: stages([images[(i + k) % len(images)] for k in range(batch)]), batch, seconds)
        if rate > best.get("throughput", 0):
            best = {"throughput": round(rate, 2), "batch": batch}
    return best


def network_limit(stages: Stages, images: list[bytes], batches: list[int], seconds: float) -> list[dict]:
    """The network alone, on preprocessed batches taken from host memory and returned to it, as the
    server's network stage runs: images/s per batch size."""
    inputs = stages.preprocess([images[k % len(images)] for k in range(max(batches))])[0]
    return [{"batch": batch, "throughput": round(_rate(lambda i: stages.network(inputs[:batch]), batch, seconds), 2)}
            for batch in batches]


def _naive_server(repository: str, port: int) -> None:
    """What a user might write without Triton: Flask and the same runtimes, one request at a time."""
    from flask import Flask, jsonify, request

    stages = load_stages(Path(repository))
    app = Flask("naive")

    @app.post("/detect")
    def detect():
        boxes, scores, classes = stages([request.get_data()])
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
                  label="naive server (Flask)")
    if limit == limit:  # not NaN
        left.axhline(limit, color="gray", linestyle=":", label="limit")
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


def limit_of(report: dict) -> tuple[float, str]:
    """What the server should approach: the network alone where it runs on a GPU (the preprocess
    and postprocess then run on other processors beside it), else the whole pipeline in process."""
    if report.get("network_limit") and report["network_device"] != "cpu":
        best = max(report["network_limit"], key=lambda row: row["throughput"])
        return best["throughput"], f"network only, batch {best['batch']}"
    if report["in_process"]["batch"] is None:
        return float("nan"), "not measured"
    return report["in_process"]["throughput"], f"in process, batch {report['in_process']['batch']}"


def markdown(report: dict) -> str:
    limit, limit_name = limit_of(report)
    lines = [report["title"], "", f"Settings: {report['settings']}", ""]
    if report["in_process"]["batch"] is not None:
        lines.append(f"In process (no server, {report['network_device']}, best batch {report['in_process']['batch']}): "
                     f"**{report['in_process']['throughput']} requests/s**.")
    if report.get("network_limit"):
        lines.append("Network alone (host memory in and out), images/s by batch: " + ", ".join(
            f"{row['batch']}: {row['throughput']}" for row in report["network_limit"]) + ".")
    if report.get("gpu_memory_at_rest_mib"):
        lines.append(f"GPU memory in use with the models loaded, before any request: "
                     f"{', '.join(f'GPU {g}: {m:.0f} MiB' for g, m in report['gpu_memory_at_rest_mib'].items())}.")
    lines += ["", f"| concurrency | Triton req/s | p50 ms | p90 ms | p95 ms | p99 ms | errors | vs limit ({limit_name}) | "
              "naive req/s | Triton / naive | network batch | network queue ms | network infer ms | preprocess queue ms "
              "| GPU util % | GPU memory MiB |",
              "| --- " * 16 + "|"]
    naive = {row["concurrency"]: row for row in report.get("naive", [])}
    for row in report["served"]:
        other = naive.get(row["concurrency"])
        net, pre = row["triton"][pipeline.NETWORK], row["triton"][pipeline.PREPROCESS]
        naive_rate = other["throughput"] if other else "-"
        versus_naive = f"{row['throughput'] / other['throughput']:.2f}x" if other and other["throughput"] else "-"
        versus_limit = f"{row['throughput'] / limit:.2f}x" if limit == limit else "-"  # NaN: not measured
        gpus = row.get("gpus") or []
        utilisation = " / ".join(f"{g['utilization_percent']:.0f}" for g in gpus) or "-"
        memory = " / ".join(f"{g['memory_used_mib']:.0f}" for g in gpus) or "-"
        lines.append(
            f"| {row['concurrency']} | {row['throughput']} | {row['p50_ms']} | {row['p90_ms']} | {row['p95_ms']} | "
            f"{row['p99_ms']} | {row['errors']} | {versus_limit} | {naive_rate} | {versus_naive} | "
            f"{net['average_batch']} | {net['queue_ms']} | {net['compute_infer_ms']} | {pre['queue_ms']} | "
            f"{utilisation} | {memory} |")
    return "\n".join(lines) + "\n"


def settings(url: str) -> str:
    """The served models' instance groups and batching, read from the server itself."""
    import tritonclient.grpc as grpcclient

    server = grpcclient.InferenceServerClient(url)
    parts = []
    for name in MODELS:
        config = server.get_model_config(name, as_json=True)["config"]
        groups = ", ".join(f"{g.get('count', 1)} x {g.get('kind', 'KIND_CPU')[5:]}"
                           + (f" on GPUs {g['gpus']}" if g.get("gpus") else "") for g in config.get("instance_group", []))
        batching = config.get("dynamic_batching")
        delay = f", queue delay {batching.get('max_queue_delay_microseconds', 0)} us" if batching is not None else ""
        parts.append(f"{name}: {groups}, max batch {config.get('max_batch_size', 0)}{delay}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:7001", help="the served detection ensemble (gRPC)")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository",
                        help="the repository the server runs (for the baselines)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--clients", type=int, default=1, help="client processes, each with the concurrency given")
    parser.add_argument("--seconds", type=float, default=20, help="measured time per level")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--images", type=int, default=32, help="generated test-split images sent round-robin")
    parser.add_argument("--image-dir", type=Path, nargs="*", help="send these images (files or folders) instead")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--baselines-from", type=Path, metavar="REPORT.json",
                        help="take the baselines from an earlier report of this machine instead of measuring them")
    parser.add_argument("--batches", type=int, nargs="+", help="in-process batch sizes "
                        "(default: 1 8 on the CPU; 1 8 16 32 64 where the network runs on a GPU)")
    parser.add_argument("--naive-port", type=int, default=7010, help="the naive server's port (0: any free one)")
    parser.add_argument("--naive-concurrency", type=int, default=16, help="highest concurrency the naive server gets")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance", help="report folder")
    parser.add_argument("--name", default="cpu", help="report file names: NAME.json, NAME.md, NAME.png")
    parser.add_argument("--device", default=f"{platform.machine()} CPU, {os.cpu_count()} cores")
    args = parser.parse_args(argv)
    images, source = load_images(args.image_dir, args.images)
    if not images:
        parser.error("no images to send")
    resting = {str(gpu): used for gpu, _, used, _ in GpuMonitor.read()}
    served = [served_level(args.url, images, c, args.seconds, args.warmup, args.clients)
              for c in tqdm(args.concurrency, desc="served", unit="level")]
    report = {"device": args.device, "date": time.strftime("%Y-%m-%d"), "settings": settings(args.url),
              "served": served, "in_process": {"throughput": float("nan"), "batch": None}, "naive": [],
              "network_limit": [], "network_device": "cpu", "gpu_memory_at_rest_mib": resting}
    if args.baselines_from:
        earlier = json.loads(args.baselines_from.read_text())
        report.update({key: earlier[key] for key in ("in_process", "naive", "network_limit", "network_device")})
    elif args.baselines:
        report.update(baselines(args, images))
    clients = f"{args.clients} client processes, each" if args.clients > 1 else "one client"
    report["title"] = (f"Detection ensemble, {args.device}, {report['date']}; {clients} with the concurrency shown "
                       f"(trt_client, gRPC); {args.seconds:g} s per level after {args.warmup:g} s warm-up, {source} "
                       "round-robin.")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.output / f"{args.name}.md").write_text(markdown(report))
    plot(served, report["naive"], limit_of(report)[0], args.output / f"{args.name}.png", report["title"])
    print(markdown(report))
    print(f"Report: {args.output / args.name}.{{json,md,png}}")
    return 0


def baselines(args: argparse.Namespace, images: list[bytes]) -> dict:
    """The in-process limits and the naive server, measured on the same images."""
    stages = load_stages(args.model_repository)
    batches = args.batches or ([1, 8] if stages.network_device == "cpu" else [1, 8, 16, 32, 64])
    found = {"network_device": stages.network_device,
             "in_process": in_process_limit(stages, images, batches, args.seconds),
             "network_limit": network_limit(stages, images, batches, args.seconds)}
    del stages  # the naive server loads its own copy, in its own process
    if args.naive_port == 0:
        args.naive_port = launcher.free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=_naive_server, args=(str(args.model_repository), args.naive_port), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.naive_port}/", timeout=1)
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.5)
        levels = [c for c in args.concurrency if c <= args.naive_concurrency]
        found["naive"] = [naive_level(args.naive_port, images, c, args.seconds, args.warmup)
                          for c in tqdm(levels, desc="naive server", unit="level")]
    finally:
        process.terminate()
        process.join(10)
    return found


if __name__ == "__main__":
    sys.exit(main())
