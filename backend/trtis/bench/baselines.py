"""What the served figures are measured against, on the same requests: the model in this process
(no server; the best batch size), one of its composing models alone (a batch sweep), and a naive
server a user might write instead of Triton (Flask, one request at a time, same runtimes)."""
from __future__ import annotations

import io
import json
import multiprocessing
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from trtis.bench.in_process import InProcessModel, StepFunction
from trtis.bench.inputs import Request
from trtis.bench.load import percentiles
from trtis.config import ModelConfig


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
    if not batches or min(batches) < 1 or (max(batches) > 1 and limit == 0):
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


def _raw_input(config: ModelConfig) -> bool:
    """Whether the naive server takes the request body as the model's one BYTES input, as a user
    would post a file; otherwise the body is an ``.npz`` of numeric inputs."""
    strings = [t for t in config.input if t.data_type == pb.TYPE_STRING]
    if strings and len(config.input) > 1:
        raise ValueError(f"the naive server takes one BYTES input or numeric inputs; {config.name!r} has "
                         f"{[t.name for t in config.input]}: run without the naive baseline")
    return bool(strings)


def encode_body(request: Request, raw: bool) -> bytes:
    if raw:
        (array,) = request.values()
        return bytes(array.reshape(-1)[0])
    buffer = io.BytesIO()
    np.savez(buffer, **request)
    return buffer.getvalue()


def _naive_server(root: str, model: str, overrides: Mapping[str, StepFunction], port: int, pipe) -> None:
    """What a user might write without Triton: Flask and the same runtimes, one request at a time."""
    import logging

    from flask import Flask, Response, request
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    try:
        runner = InProcessModel(root, model, overrides)
        config = runner.configs[model]
        raw = _raw_input(config)
        shape = (1,) * (len(config.input[0].dims) + (config.max_batch_size > 0)) if raw else ()
        app = Flask("naive")

        @app.post("/infer")
        def infer():
            body = request.get_data()
            if raw:
                feed = {config.input[0].name: np.array([body], dtype=np.object_).reshape(shape)}
            else:
                with np.load(io.BytesIO(body), allow_pickle=False) as arrays:
                    feed = dict(arrays)
            outputs = runner(feed)
            text = json.dumps({name: value.tolist() for name, value in outputs.items()},
                              default=lambda item: item.decode("utf-8", "replace"))
            return Response(text, mimetype="application/json")

        server = make_server("127.0.0.1", port, app, threaded=False)  # no development-server banner
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
        pipe.send(f"{type(error).__name__}: {error}")
        return
    pipe.send(server.port)
    server.serve_forever()


class NaiveServer:
    """The naive server in a process of its own, for a ``with`` block; ``port=0`` takes a free one."""

    def __init__(self, root: Path | str, model: str, overrides: Mapping[str, StepFunction] | None = None,
                 port: int = 0, timeout: float = 300):
        self.root, self.model, self.overrides, self.port, self.timeout = str(root), model, dict(overrides or {}), port, timeout

    def __enter__(self) -> NaiveServer:
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(target=_naive_server, daemon=True,
                                       args=(self.root, self.model, self.overrides, self.port, sender))
        self.process.start()
        deadline = time.monotonic() + self.timeout
        while not receiver.poll(0.5):
            if not self.process.is_alive():
                raise RuntimeError(f"the naive server exited while starting (exit code {self.process.exitcode})")
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the naive server did not start within {self.timeout:.0f} s")
        answer = receiver.recv()
        if isinstance(answer, str):
            self.__exit__()
            raise RuntimeError(f"the naive server could not start: {answer}")
        self.port = answer
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.join(10)


def naive_level(port: int, requests: Sequence[Request], raw: bool, concurrency: int, seconds: float,
                warmup: float) -> dict:
    """As ``load.measure``, against the naive server: one blocking HTTP client thread per request in flight."""
    bodies = [encode_body(r, raw) for r in requests]
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
                post = urllib.request.Request(f"http://127.0.0.1:{port}/infer", data=bodies[index % len(bodies)],
                                              method="POST", headers={"Content-Type": "application/octet-stream"})
                with urllib.request.urlopen(post, timeout=120) as response:
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


def naive_levels(root: Path | str, model: str, requests: Sequence[Request], levels: Sequence[int], seconds: float,
                 warmup: float, overrides: Mapping[str, StepFunction] | None = None, port: int = 0,
                 progress: Callable[[Sequence[int]], Iterable[int]] = iter) -> list[dict]:
    """Start the naive server and measure it at each of ``levels``."""
    from trtis import repository

    raw = _raw_input(repository.read_configs(Path(root))[model])
    with NaiveServer(root, model, overrides, port) as server:
        return [naive_level(server.port, requests, raw, level, seconds, warmup) for level in progress(levels)]
