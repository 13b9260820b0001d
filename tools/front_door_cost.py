"""What the HTTP front door (nginx) costs: the same HTTP load through it and straight to Triton's own port.

One server, one model, requests of real inputs over tritonclient's HTTP client from threads; the
two paths alternate (door, direct, door, direct) so a drift of the machine falls on both. Writes
REPORT.json and REPORT.md:

    .venv/bin/python tools/front_door_cost.py --model-repository model_repository --model detection \
        --files example/test-data/*.jpg --concurrency 1 4 --seconds 10 --report docs/performance/front-door-cpu
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.http as triton_http

from trtis.bench.load import percentiles
from trtis.serving import serve, state_folder


def processor() -> str:
    """The CPU's model name (figures hold for one processor only)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def gpus() -> str | None:
    """The GPUs' names as nvidia-smi gives them ("NVIDIA H200", "2 x NVIDIA H200"), or None without one."""
    nvidia_smi = shutil.which("nvidia-smi") or next(
        (p for p in ("/usr/local/nvidia/bin/nvidia-smi",) if Path(p).is_file()), None)
    if nvidia_smi is None:
        return None
    try:
        found = subprocess.run([nvidia_smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in found.stdout.splitlines() if line.strip()]
    if found.returncode != 0 or not names:
        return None
    return ", ".join(f"{names.count(name)} x {name}" if names.count(name) > 1 else name for name in dict.fromkeys(names))


def inputs(files: list[Path], model: dict) -> list[list[triton_http.InferInput]]:
    """One request per file for a model whose first input is an encoded image, else zeros of its shape."""
    first = model["inputs"][0]
    if files:
        made = []
        for path in files:
            tensor = triton_http.InferInput(first["name"], [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[path.read_bytes()]], dtype=object))
            made.append([tensor])
        return made
    tensors = []
    for spec in model["inputs"]:
        shape = [1] + [max(1, int(d)) for d in spec["shape"][1:]]
        tensor = triton_http.InferInput(spec["name"], shape, spec["datatype"])
        tensor.set_data_from_numpy(np.zeros(shape, dtype=triton_http.triton_to_np_dtype(spec["datatype"])))
        tensors.append(tensor)
    return [tensors]


def load(url: str, model: str, requests: list, concurrency: int, seconds: float) -> dict:
    """``concurrency`` threads, each with its own client, for ``seconds``: requests/s and latency."""
    latencies: list[float] = []
    errors = [0]
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(offset: int):
        client = triton_http.InferenceServerClient(url, connection_timeout=60, network_timeout=60)
        mine, failed, i = [], 0, offset
        while time.monotonic() < stop_at:
            began = time.monotonic()
            try:
                client.infer(model, requests[i % len(requests)])
                mine.append(time.monotonic() - began)
            except Exception:  # counted, not hidden: the report shows them
                failed += 1
            i += 1
        client.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = percentiles(latencies)
    return {"requests_per_s": round(len(latencies) / seconds, 2), "errors": errors[0],
            "p50_ms": found["p50_ms"], "p99_ms": found["p99_ms"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--files", type=Path, nargs="*", default=[], help="encoded images (else zeros of the shape)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="door/direct pairs per level")
    parser.add_argument("--report", type=Path, required=True, help="REPORT: writes REPORT.json and REPORT.md")
    args = parser.parse_args()
    rows = []
    with serve(args.model_repository) as server:
        direct = state_folder.state(server.state_dir)["ready_url"].split("/")[2]
        with triton_http.InferenceServerClient(server.http_url) as client:
            requests = inputs(args.files, client.get_model_metadata(args.model))
        load(server.http_url, args.model, requests, max(args.concurrency), 3)  # warm-up
        for concurrency in args.concurrency:
            for round_ in range(args.rounds):
                for path, url in (("front door", server.http_url), ("direct", direct)):
                    row = {"path": path, "concurrency": concurrency, "round": round_ + 1,
                           **load(url, args.model, requests, concurrency, args.seconds)}
                    print(json.dumps(row))
                    rows.append(row)
    report = {"title": "HTTP through the front door (nginx) and straight to Triton", "model": args.model,
              "device": "; ".join(filter(None, [gpus(), f"{processor()}, {len(os.sched_getaffinity(0))} cores"])),
              "date": time.strftime("%Y-%m-%d"), "seconds": args.seconds, "rows": rows,
              "reproduce": shlex.join([".venv/bin/python", "tools/front_door_cost.py", *sys.argv[1:]])}
    args.report.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"# {report['title']}", "", f"{report['device']}, {report['date']}; model `{args.model}`; "
             f"{args.seconds:.0f} s a row, the paths alternating.", "",
             "| in flight | path | round | requests/s | p50 ms | p99 ms | errors |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['concurrency']} | {r['path']} | {r['round']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['errors']} |" for r in rows]
    lines += ["", f"Reproduce: `{report['reproduce']}`", ""]
    args.report.with_suffix(".md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
