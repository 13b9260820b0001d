"""A burst: many large requests sent at once to a served model, then one ordinary request.

What an operator needs to know of a burst: how many requests the server took and how many it
refused, how quickly the refusals came (a bounded queue refuses at once), how long the ordinary
request behind it waited, and what the burst cost in memory (every process of the server, and the
Python backend's /dev/shm regions) at its peak and once it was over. Writes a JSON report and a
Markdown table beside it:

    python -m trtis.serving.burst --model-repository model_repository --model detection \\
        --files big.jpg --good example/test-data/000000000139.jpg --count 100 --report reports/burst.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from trt_client.errors import translate
from trtis import config
from trtis.bench.inputs import Request, model_inputs, requests_for
from trtis.bench.load import percentiles
from trtis.repository import read_configs
from trtis.serving import process, serve, state_folder
from trtis.serving.soak import MIB, MemorySampler, write_report


def shared_memory_bytes(shm_prefix: str) -> int:
    """The size of the server's Python-backend regions in /dev/shm (what they took, not what is touched)."""
    return sum(region.stat().st_size for region in process.regions(shm_prefix))


def _infer_inputs(request: Request) -> list[grpcclient.InferInput]:
    tensors = []
    for name, array in request.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def send_all(url: str, model: str, requests: list[Request],
             headers: dict | None = None) -> list[tuple[float, str, str]]:
    """Send every request at once (gRPC, asynchronous); per request: seconds to its answer, its
    outcome ("ok", or the trt_client error it maps to, e.g. Overloaded) and the server's message."""
    answers: list[tuple[float, str, str]] = []
    done = threading.Event()
    lock = threading.Lock()

    def answered(began: float, result, error: InferenceServerException | None) -> None:
        outcome = "ok" if error is None else type(translate(error, url, model)).__name__
        with lock:
            answers.append((time.monotonic() - began, outcome, "" if error is None else error.message()))
            if len(answers) == len(requests):
                done.set()

    with grpcclient.InferenceServerClient(url) as client:
        for request in requests:
            began = time.monotonic()
            client.async_infer(model, _infer_inputs(request), headers=headers,
                               callback=lambda result, error, began=began: answered(began, result, error))
        done.wait()
    return answers


def _by_message(answers: list[tuple[float, str, str]]) -> dict[str, list[float]]:
    """The seconds to each refusal, by the server's message (a full queue, a queue timeout...)."""
    found: dict[str, list[float]] = {}
    for seconds, outcome, message in answers:
        if outcome != "ok":
            found.setdefault(message.split("] ")[-1], []).append(seconds)
    return found


def _memory(sampler: MemorySampler, before: dict[str, int], after: dict[str, int]) -> list[dict]:
    names = sorted(set(before) | set(after) | {n for _, sample in sampler.samples for n in sample})
    return [{"process": name, "before_mib": round(before.get(name, 0) / MIB, 1),
             "peak_mib": round(max([s.get(name, 0) for _, s in sampler.samples] + [after.get(name, 0)]) / MIB, 1),
             "after_mib": round(after.get(name, 0) / MIB, 1)} for name in names]


def without_queue_bounds(repository: Path, copy: Path) -> Path:
    """A copy of ``repository`` whose models queue without end (Triton's default): the burst's baseline."""
    shutil.copytree(repository, copy, symlinks=True)
    for name, model in read_configs(copy).items():
        if model.HasField("dynamic_batching"):
            model.dynamic_batching.ClearField("default_queue_policy")
            (copy / name / "config.pbtxt").write_text(config.to_text(model))
    return copy


def burst(repository: Path, model: str, files: list[Path], good: Path, count: int, settle_s: float = 5.0) -> dict:
    """Serve ``repository``, warm ``model`` with ``good``, send ``count`` requests of ``files`` at once,
    then ``good`` again; memory sampled every 0.2 s, and once more ``settle_s`` after the burst."""
    with serve(repository, restricted=True) as server:
        inputs = model_inputs(server.grpc_url, model, server.admin_headers)
        burst_requests, described = requests_for(inputs, files)
        good_request = requests_for(inputs, [good])[0][0]
        send_all(server.grpc_url, model, [good_request], server.admin_headers)  # warm
        sampler = MemorySampler(server.state_dir, interval=0.2)
        prefix = json.loads((server.state_dir / state_folder.STATE_FILE).read_text())["shm_prefix"]
        before = {name: process.rss_bytes(pid) for name, pid in sampler.processes().items()}
        shm_before = shared_memory_bytes(prefix)
        sampler.start()
        shm_peak = [shm_before]
        watching = threading.Event()

        def watch_shm() -> None:
            while not watching.wait(0.2):
                shm_peak.append(shared_memory_bytes(prefix))

        threading.Thread(target=watch_shm, daemon=True).start()
        began = time.monotonic()
        answers = send_all(server.grpc_url, model, [burst_requests[i % len(burst_requests)] for i in range(count)],
                           server.admin_headers)
        burst_s = time.monotonic() - began
        good_s, good_outcome, _ = send_all(server.grpc_url, model, [good_request], server.admin_headers)[0]
        time.sleep(settle_s)
        sampler.done.set()
        watching.set()
        sampler.join()
        after = {name: process.rss_bytes(pid) for name, pid in sampler.processes().items()}
        shm_after = shared_memory_bytes(prefix)
    outcomes = Counter(outcome for _, outcome, _ in answers)
    refused = [seconds for seconds, outcome, _ in answers if outcome != "ok"]
    taken = [seconds for seconds, outcome, _ in answers if outcome == "ok"]
    return {"model": model, "count": count, "requests": described, "burst_s": round(burst_s, 2),
            "outcomes": dict(outcomes),
            "refusals": {message: {"count": len(times), "max_ms": round(max(times) * 1000, 1)}
                         for message, times in _by_message(answers).items()},
            "refused_ms": percentiles(refused) | {"max": round(max(refused, default=0) * 1000, 1)},
            "answered_ms": percentiles(taken) | {"max": round(max(taken, default=0) * 1000, 1)},
            "good_after_ms": round(good_s * 1000, 1), "good_after_outcome": good_outcome,
            "memory": _memory(sampler, before, after),
            "shared_memory_mib": {"before": round(shm_before / MIB, 1), "peak": round(max(shm_peak) / MIB, 1),
                                  "after": round(shm_after / MIB, 1)}}


def markdown(report: dict) -> str:
    outcomes = ", ".join(f"{n} {name}" for name, n in sorted(report["outcomes"].items()))
    shm = report["shared_memory_mib"]
    lines = [f"Burst of {report['count']} requests to `{report['model']}` ({report['requests']}), sent at once: "
             f"{outcomes}; all answered in {report['burst_s']} s. "
             + (f"Refusals came after p50 {report['refused_ms']['p50_ms']} ms, at most {report['refused_ms']['max']} ms; "
                if report["refusals"] else "None was refused; ")
             + f"answers after at most {report['answered_ms']['max']} ms. "
             f"An ordinary request sent after it: {report['good_after_outcome']} in {report['good_after_ms']} ms. "
             f"Python-backend shared memory: {shm['before']} MiB before, {shm['peak']} at the peak, {shm['after']} after.",
             *(f"- {row['count']} x {message!r}, the last after {row['max_ms']} ms" for message, row in report["refusals"].items()),
             "", "| process | before (MiB) | peak (MiB) | after (MiB) |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {row['process']} | {row['before_mib']} | {row['peak_mib']} | {row['after_mib']} |" for row in report["memory"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtis.serving.burst", description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", required=True, help="the model to send to (an ensemble loads its steps)")
    parser.add_argument("--files", type=Path, nargs="+", required=True, help="the burst's input files, in turn")
    parser.add_argument("--good", type=Path, required=True, help="an ordinary input, sent before and after the burst")
    parser.add_argument("--count", type=int, default=100, help="requests in the burst")
    parser.add_argument("--without-queue-bounds", action="store_true",
                        help="serve a copy whose models queue without end (Triton's default), for comparison")
    parser.add_argument("--report", type=Path, default=Path("reports/burst.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        served = without_queue_bounds(args.model_repository, Path(scratch) / "repository") \
            if args.without_queue_bounds else args.model_repository
        report = burst(served, args.model, args.files, args.good, args.count)
    write_report(args.report, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
