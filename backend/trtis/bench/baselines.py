"""What the served figures are measured against, on the same requests: the model in this process
(no server; the best batch size, and driven by as many threads as each served level has requests in
flight), one of its composing models alone (a batch sweep), and a naive server a user might write
instead of Triton (Flask, one request at a time, same runtimes)."""
from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from trtis.bench.in_process import InProcessModel, StepFunction
from trtis.bench.inputs import Request
from trtis.bench.load import percentiles
from trtis.bench.naive_server import NaiveServer, encode_body, raw_input
from trtis.bench.plan import Load


def rate(work: Callable[[int], object], batch: int, seconds: float) -> float:
    """Items per second of ``work(i)`` (one batch of ``batch`` items) run back to back for ``seconds``,
    after one untimed call."""
    work(0)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        work(done)
        done += batch
    return done / (time.perf_counter() - began)


def stacked(requests: Sequence[Request], batch: int, offset: int = 0) -> Request:
    """``batch`` requests from ``offset`` on (round-robin) as one batch, along the batch axis."""
    chosen = [requests[(offset + k) % len(requests)] for k in range(batch)]
    return {name: np.concatenate([r[name] for r in chosen]) for name in chosen[0]}


def _check_batches(runner: InProcessModel, batches: Sequence[int]) -> None:
    limit = runner.configs[runner.name].max_batch_size
    if not batches or min(batches) < 1 or (max(batches) > 1 and limit == 0) or (limit and max(batches) > limit):
        raise ValueError(f"batch sizes {list(batches)}: {runner.name!r} takes "
                         + (f"batches of 1 to {limit}" if limit else "no batch axis: use 1"))


def in_process_limit(runner: InProcessModel, requests: Sequence[Request], batches: Sequence[int],
                     seconds: float) -> dict:
    """The model in this process, no server: requests/s at the best of ``batches``."""
    _check_batches(runner, batches)
    best: dict = {"throughput": float("nan"), "batch": None}
    for batch in batches:
        found = rate(lambda i: runner(stacked(requests, batch, i)), batch, seconds)
        if best["batch"] is None or found > best["throughput"]:
            best = {"throughput": round(found, 2), "batch": batch}
    return best


def alone_limit(runner: InProcessModel, model: str, requests: Sequence[Request], batches: Sequence[int],
                seconds: float) -> list[dict]:
    """Composing model ``model`` alone, on the inputs the chain before it gives, from host memory
    and back to it as the server runs it: items/s per batch size."""
    if model not in runner.steps:
        raise ValueError(f"{runner.name!r} does not run {model!r} (it runs {runner.models})")
    _check_batches(runner, batches)
    feed = runner.step_feeds(stacked(requests, max(batches)))[model]
    step = runner.steps[model]
    return [{"batch": batch, "throughput": round(rate(lambda i: step({k: v[:batch] for k, v in feed.items()}),
                                                      batch, seconds), 2)} for batch in batches]


def threaded(work: Callable[[int], object], concurrency: int, seconds: float, warmup: float,
             failures: tuple[type[BaseException], ...] = ()) -> dict:
    """``concurrency`` threads each calling ``work(i)`` back to back (one request per call, so
    ``concurrency`` requests in flight) for ``seconds`` after ``warmup``: as ``load.measure``, calls
    finished inside the window count, latencies of those also begun inside it. An exception of
    ``failures`` counts as an error; any other propagates."""
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
                work(index)
                ok = True
            except failures:
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


def in_process_levels(runner: InProcessModel, requests: Sequence[Request], levels: Sequence[int], seconds: float,
                      warmup: float, progress: Callable[[Sequence[int]], Iterable[int]] = iter) -> list[dict]:
    """The model in this process at each of ``levels`` requests in flight: that many threads, each
    running one request at a time, like the served levels, so each level has a like-for-like figure."""
    return [threaded(lambda i: runner(requests[i % len(requests)]), level, seconds, warmup)
            for level in progress(levels)]


def naive_level(port: int, requests: Sequence[Request], raw: bool, concurrency: int, seconds: float,
                warmup: float) -> dict:
    """As ``load.measure``, against the naive server: one blocking HTTP client thread per request in flight."""
    bodies = [encode_body(r, raw) for r in requests]

    def post(index: int) -> None:
        call = urllib.request.Request(f"http://127.0.0.1:{port}/infer", data=bodies[index % len(bodies)],
                                      method="POST", headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(call, timeout=120) as response:
            response.read()

    return threaded(post, concurrency, seconds, warmup, failures=(OSError,))


def naive_levels(root: Path | str, model: str, load: Load, overrides: Mapping[str, StepFunction] | None = None,
                 port: int = 0, progress: Callable[[Sequence[int]], Iterable[int]] = iter) -> list[dict]:
    """Start the naive server and measure it at each of ``load.levels``."""
    from trtis import repository

    raw = raw_input(repository.read_configs(Path(root))[model])
    with NaiveServer(root, model, overrides, port) as server:
        return [naive_level(server.port, load.requests, raw, level, load.seconds, load.warmup)
                for level in progress(load.levels)]
