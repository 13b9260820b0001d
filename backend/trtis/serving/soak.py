"""A soak: a served model held at saturation for minutes, with the memory of every process of the
server sampled throughout, so that a leak shows as growth per process (outside CI: it takes minutes).
With ``--kill-every``, a backend process is killed (``kill -9``) at that period, each model's in
turn, and the time until the server answers ready again is reported: the supervisor's recovery.

    python -m trtis.serving.soak --model-repository model_repository --model detection \\
        --files example/test-data --minutes 3 --concurrency 16 --report reports/soak.json

It starts the server on free ports (supervised and locked, as start.sh does), keeps
``--concurrency`` requests in flight with ``trtis.bench``'s load generator, samples the resident
memory of the supervisor, tritonserver and each backend instance every few seconds, and writes a
JSON report and a Markdown table beside it: memory after the warm-up, at the end, the peak, and
the growth per minute after the warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from trtis.bench.inputs import files_under, model_inputs, requests_for
from trtis.bench.load import measure
from trtis.bench.plan import Load, Target
from trtis.serving import process, serve, state_folder
from trtis.serving.supervisor import ready

MIB = 2 ** 20


class MemorySampler(threading.Thread):
    """The resident memory of each process of one server, every ``interval`` seconds."""

    def __init__(self, state_dir: Path, interval: float):
        super().__init__(daemon=True)
        self.state_file, self.interval, self.done = Path(state_dir) / state_folder.STATE_FILE, interval, threading.Event()
        self.samples: list[tuple[float, dict[str, int]]] = []

    def processes(self) -> dict[str, int]:
        state = json.loads(self.state_file.read_text())
        named = {"supervisor": state["supervisor"]["pid"], "tritonserver": state["server"]["pid"]}
        return named | {instance: pid for pid, instance in process.stubs(state["shm_prefix"]).items()}

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.samples.append((time.time(), {name: process.rss_bytes(pid) for name, pid in self.processes().items()}))

    def series(self, began: float) -> dict[str, list[list[float]]]:
        """Per process: [seconds since ``began``, MiB] at each sample (to see whether growth levels off)."""
        names = sorted({name for _, sample in self.samples for name in sample})
        return {name: [[round(t - began, 1), round(sample[name] / MIB, 1)] for t, sample in self.samples if name in sample]
                for name in names}

    def summary(self, after: float) -> list[dict]:
        """Per process: memory at the first sample after ``after``, at the end, the peak, and the
        growth per minute over all of it and over its second half (growth that levels off is an
        allocator filling up; growth that does not may be a leak)."""
        kept = [(t, sample) for t, sample in self.samples if t >= after]
        if len(kept) < 3:
            raise RuntimeError("too few memory samples: run longer than the warm-up plus three intervals")

        def growth(name: str, since: int) -> float:
            (first_t, first), (last_t, last) = kept[since], kept[-1]
            return round((last.get(name, 0) - first.get(name, 0)) / MIB / ((last_t - first_t) / 60), 2)

        first, last = kept[0][1], kept[-1][1]
        return [{"process": name, "start_mib": round(first[name] / MIB, 1), "end_mib": round(last.get(name, 0) / MIB, 1),
                 "peak_mib": round(max(s.get(name, 0) for _, s in kept) / MIB, 1),
                 "growth_mib_per_min": growth(name, 0), "second_half_growth_mib_per_min": growth(name, len(kept) // 2)}
                for name in sorted(first)]


class Killer(threading.Thread):
    """Every ``period`` seconds, kill -9 one backend process (each model's in turn) and time how long
    the server takes to answer ready again."""

    def __init__(self, server, sampler: MemorySampler, period: float):
        super().__init__(daemon=True)
        self.server, self.sampler, self.period, self.done = server, sampler, period, threading.Event()
        self.recoveries: list[dict] = []

    def run(self) -> None:
        url, turn = f"http://{self.server.http_url}/v2/health/ready", 0
        while not self.done.wait(self.period):
            stubs = sorted((process.stub_model(pid), instance, pid) for instance, pid in self.sampler.processes().items()
                           if instance not in ("supervisor", "tritonserver"))
            models = sorted({model for model, _, _ in stubs})
            _, instance, pid = next(stub for stub in stubs if stub[0] == models[turn % len(models)])
            turn += 1
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while ready(url, timeout=1) and time.monotonic() < killed + 30:
                time.sleep(0.1)
            noticed = time.monotonic()
            while not ready(url, timeout=1) and time.monotonic() < killed + 300:
                time.sleep(0.1)
            self.recoveries.append({"instance": instance, "not_ready_after_s": round(noticed - killed, 2),
                                    "ready_again_after_s": round(time.monotonic() - killed, 2)})


def markdown(report: dict) -> str:
    lines = [f"Soak of `{report['model']}`: {report['minutes']} min at concurrency {report['concurrency']} "
             f"({report['requests']}), {report['throughput']} requests/s, {report['errors']} errors"
             f"{' (first: ' + report['first_error'] + ')' if report['first_error'] else ''}, "
             f"p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms; memory sampled every {report['interval_s']} s "
             f"after a {report['warmup_s']} s warm-up.", "",
             "| process | after warm-up (MiB) | end (MiB) | peak (MiB) | growth (MiB/min) | in the second half (MiB/min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row['process']} | {row['start_mib']} | {row['end_mib']} | {row['peak_mib']} | {row['growth_mib_per_min']} "
              f"| {row['second_half_growth_mib_per_min']} |" for row in report["memory"]]
    if report["recoveries"]:
        lines += ["", "| killed (kill -9) | not ready after (s) | ready again after (s) |", "| --- | ---: | ---: |"]
        lines += [f"| {row['instance']} | {row['not_ready_after_s']} | {row['ready_again_after_s']} |"
                  for row in report["recoveries"]]
    return "\n".join(lines) + "\n"


def soak(repository: Path, model: str, files: list[Path], minutes: float, concurrency: int, warmup: float,
         interval: float, kill_every: float = 0) -> dict:
    with serve(repository, restricted=True) as server:
        inputs = model_inputs(server.grpc_url, model)
        requests, described = requests_for(inputs, files_under(files) if files else ())
        sampler = MemorySampler(server.state_dir, interval)
        killer = Killer(server, sampler, kill_every)
        sampler.start()
        if kill_every:
            killer.start()
        began = time.time()
        row = measure(Target(server.grpc_url, model, headers=server.admin_headers),
                      Load(requests, [concurrency], seconds=minutes * 60, warmup=warmup), concurrency, [model])
        for thread in (sampler, killer):
            thread.done.set()
            if thread.is_alive():
                thread.join()
    return {"model": model, "minutes": minutes, "concurrency": concurrency, "requests": described,
            "warmup_s": warmup, "interval_s": interval, "throughput": row["throughput"], "errors": row["errors"],
            "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"], "first_error": row.get("first_error"),
            "memory": sampler.summary(began + warmup), "recoveries": killer.recoveries,
            "memory_series_mib": sampler.series(began)}


def write_report(path: Path, report: dict, text: str) -> None:
    """The report as JSON at ``path``, its Markdown ``text`` beside it and on the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    path.with_suffix(".md").write_text(text)
    print(text, end="")
    print(f"Report: {path} and {path.with_suffix('.md')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtis.serving.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", required=True, help="the model to load (an ensemble loads its steps)")
    parser.add_argument("--files", type=Path, nargs="*", default=[], help="input files (folders are searched); "
                        "without them, random inputs of the model's shapes")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16, help="requests kept in flight (saturation)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before memory growth is counted")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--kill-every", type=float, default=0, help="seconds between kill -9 of a backend process "
                        "(each model's in turn; 0: none)")
    parser.add_argument("--report", type=Path, default=Path("reports/soak.json"))
    args = parser.parse_args(argv)
    report = soak(args.model_repository, args.model, args.files, args.minutes, args.concurrency, args.warmup,
                  args.interval, args.kill_every)
    write_report(args.report, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
