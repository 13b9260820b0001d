"""A soak: a served model held at saturation for minutes, with the memory of every process of the
server sampled throughout, so that a leak shows as growth per process (outside CI: it takes minutes).

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
import sys
import threading
import time
from pathlib import Path

from trtis.bench.inputs import files_under, model_inputs, requests_for
from trtis.bench.load import measure
from trtis.serving import launcher, process, serve

MIB = 2 ** 20


class MemorySampler(threading.Thread):
    """The resident memory of each process of one server, every ``interval`` seconds."""

    def __init__(self, state_dir: Path, interval: float):
        super().__init__(daemon=True)
        self.state_file, self.interval, self.done = Path(state_dir) / launcher.STATE_FILE, interval, threading.Event()
        self.samples: list[tuple[float, dict[str, int]]] = []

    def processes(self) -> dict[str, int]:
        state = json.loads(self.state_file.read_text())
        named = {"supervisor": state["supervisor"]["pid"], "tritonserver": state["server"]["pid"]}
        return named | {instance: pid for pid, instance in process.stubs(state["shm_prefix"]).items()}

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.samples.append((time.time(), {name: process.rss_bytes(pid) for name, pid in self.processes().items()}))

    def summary(self, after: float) -> list[dict]:
        """Per process: memory at the first sample after ``after``, at the end, the peak, the growth per minute."""
        kept = [(t, sample) for t, sample in self.samples if t >= after]
        if len(kept) < 2:
            raise RuntimeError("too few memory samples: run longer than the warm-up plus two intervals")
        (first_t, first), (last_t, last) = kept[0], kept[-1]
        minutes = (last_t - first_t) / 60
        return [{"process": name, "start_mib": round(first[name] / MIB, 1), "end_mib": round(last.get(name, 0) / MIB, 1),
                 "peak_mib": round(max(s.get(name, 0) for _, s in kept) / MIB, 1),
                 "growth_mib_per_min": round((last.get(name, 0) - first[name]) / MIB / minutes, 2)}
                for name in sorted(first)]


def markdown(report: dict) -> str:
    lines = [f"Soak of `{report['model']}`: {report['minutes']} min at concurrency {report['concurrency']} "
             f"({report['requests']}), {report['throughput']} requests/s, {report['errors']} errors, "
             f"p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms; memory sampled every {report['interval_s']} s "
             f"after a {report['warmup_s']} s warm-up.", "",
             "| process | after warm-up (MiB) | end (MiB) | peak (MiB) | growth (MiB/min) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row['process']} | {row['start_mib']} | {row['end_mib']} | {row['peak_mib']} | {row['growth_mib_per_min']} |"
              for row in report["memory"]]
    return "\n".join(lines) + "\n"


def soak(repository: Path, model: str, files: list[Path], minutes: float, concurrency: int, warmup: float,
         interval: float) -> dict:
    with serve(repository, restricted=True) as server:
        inputs = model_inputs(server.grpc_url, model)
        requests, described = requests_for(inputs, files_under(files) if files else ())
        sampler = MemorySampler(server.state_dir, interval)
        sampler.start()
        began = time.time()
        row = measure(server.grpc_url, model, requests, concurrency, minutes * 60, warmup, [model],
                      headers=server.admin_headers)
        sampler.done.set()
        sampler.join()
    return {"model": model, "minutes": minutes, "concurrency": concurrency, "requests": described,
            "warmup_s": warmup, "interval_s": interval, "throughput": row["throughput"], "errors": row["errors"],
            "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"], "memory": sampler.summary(began + warmup)}


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
    parser.add_argument("--report", type=Path, default=Path("reports/soak.json"))
    args = parser.parse_args(argv)
    report = soak(args.model_repository, args.model, args.files, args.minutes, args.concurrency, args.warmup, args.interval)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1))
    args.report.with_suffix(".md").write_text(markdown(report))
    print(markdown(report), end="")
    print(f"Report: {args.report} and {args.report.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
