"""The load generator: clients keeping a fixed number of requests in flight against a served
model for a measured window, with Triton's statistics and GPU metrics over the same window.

Each client is a ``trt_client`` asynchronous connection (gRPC) that sends the given requests
round-robin and sends the next one as each answer comes back, like perf_analyzer's concurrency
mode. Several clients run as separate processes so one Python process is not the bottleneck.
"""
from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from trtis.bench import statistics
from trtis.bench.gpu_metrics import GpuSampler
from trtis.bench.inputs import Request
from trtis.bench.plan import Load, Target


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
    """p50/p90/p95/p99 in milliseconds (NaN when nothing was measured)."""
    values = np.array(latencies) * 1000 if len(latencies) else np.array([np.nan])
    return {f"p{p}_ms": round(float(np.percentile(values, p)), 2) for p in (50, 90, 95, 99)}


def _connect(url: str, model: str, concurrency: int, headers: Mapping[str, str] | None):
    from trt_client import client

    return client.Inference(url, model, max_in_flight=concurrency, timeout=120, headers=headers)


def _drive(runner, requests: Sequence[Request], concurrency: int, start: float, end: float) -> dict:
    """Keep ``concurrency`` requests in flight on ``runner`` until ``end`` (wall clock). Counts the
    requests finished between ``start`` and ``end``, and the latencies of those also sent after ``start``."""
    from trt_client.errors import TrtClientError

    latencies, errors, completed, sent, first_error = [], 0, 0, {}, None
    counter = 0

    def send():
        nonlocal counter
        sent[counter] = time.time()
        runner.async_run(input=requests[counter % len(requests)], input_id=counter)
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
            input_id, failed, first_error = error.input_id, True, first_error or str(error)
        now = time.time()
        issued = sent.pop(input_id)
        if start <= now <= end:
            completed += not failed
            errors += failed
            if not failed and issued >= start:
                latencies.append(now - issued)
        if now < end:
            send()
    return {"completed": completed, "errors": errors, "latencies": latencies, "first_error": first_error}


def _client_process(url: str, model: str, requests: Sequence[Request], concurrency: int,
                    headers: Mapping[str, str] | None, barrier, window, results) -> None:
    """A client in its own process: connect, wait for the others, then drive the window the parent set."""
    try:
        with _connect(url, model, concurrency, headers) as runner:
            barrier.wait()  # connected
            barrier.wait()  # the window is set
            results.put(_drive(runner, requests, concurrency, window[0], window[1]))
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
        barrier.abort()
        results.put(f"{type(error).__name__}: {error}")


class _Clients:
    """``count`` clients ready to run one window: in this process for one, else each in its own
    (spawned and connected before the window is set, so start-up never eats into it)."""

    def __init__(self, url: str, model: str, requests: Sequence[Request], concurrency: int, count: int,
                 headers: Mapping[str, str] | None):
        self.arguments, self.count = (url, model, requests, concurrency, headers), count

    def __enter__(self) -> _Clients:
        if self.count == 1:
            url, model, _, concurrency, headers = self.arguments
            self.runner = _connect(url, model, concurrency, headers)
            return self
        context = multiprocessing.get_context("spawn")
        self.barrier, self.window, self.results = context.Barrier(self.count + 1), context.Array("d", 2), context.Queue()
        self.processes = [context.Process(target=_client_process, daemon=True,
                                          args=(*self.arguments, self.barrier, self.window, self.results))
                          for _ in range(self.count)]
        for process in self.processes:
            process.start()
        try:
            self.barrier.wait(timeout=300)
        except threading.BrokenBarrierError:
            raise RuntimeError(f"a client process could not start: {self._failure()}") from None
        return self

    def _failure(self) -> str:
        try:
            return str(self.results.get(timeout=5))
        except queue.Empty:
            return "no reason given"

    def run(self, start: float, end: float) -> list[dict]:
        if self.count == 1:
            return [_drive(self.runner, self.arguments[2], self.arguments[3], start, end)]
        self.window[0], self.window[1] = start, end
        self.barrier.wait(timeout=60)
        results = [self.results.get(timeout=end - time.time() + 300) for _ in self.processes]
        failed = [r for r in results if isinstance(r, str)]
        if failed:
            raise RuntimeError(f"a client process failed: {failed[0]}")
        return results

    def __exit__(self, *exc) -> None:
        if self.count == 1:
            self.runner.close()
            return
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()


def _statistics_at(moment: float, url: str, models: Sequence[str], headers: Mapping[str, str] | None) -> dict:
    time.sleep(max(0.0, moment - time.time()))
    return statistics.read(url, models, headers)


def measure(target: Target, load: Load, concurrency: int, models: Sequence[str]) -> dict:
    """One concurrency level: ``load.clients`` clients, each keeping ``concurrency`` requests in
    flight, measured for ``load.seconds`` after ``load.warmup``. Triton's statistics of ``models``
    are read at both ends of that window; GPU metrics within it."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1 (got {concurrency})")
    url, headers, clients = target.url, target.headers, load.clients
    statistics.read(url, models, headers)  # a refusal is said before any load
    with _Clients(url, target.model, load.requests, concurrency, clients, headers) as group:
        start = time.time() + load.warmup
        end = start + load.seconds
        with GpuSampler(target.metrics_url, start, end) as gpus, ThreadPoolExecutor(2) as sampler:
            before = sampler.submit(_statistics_at, start, url, models, headers)
            after = sampler.submit(_statistics_at, end, url, models, headers)
            results = group.run(start, end)
            triton = statistics.delta(before.result(), after.result(), models)
    completed = sum(r["completed"] for r in results)
    row = {"concurrency": concurrency, "clients": clients, "throughput": round(completed / load.seconds, 2),
           **percentiles([latency for r in results for latency in r["latencies"]]),
           "errors": sum(r["errors"] for r in results), "requests": completed, "triton": triton,
           "gpus": gpus.summary()}
    first_error = next((r["first_error"] for r in results if r["first_error"]), None)
    if first_error:
        row["first_error"] = first_error
    return row
