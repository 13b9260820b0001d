"""docs/security.md's soak command, run as written for a few seconds instead of minutes, on the
detection repository the tests convert (only the repository and the report's folder change)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_soak_runs_and_reports_memory_per_process(detection_repository, tmp_path):
    command = re.search(r"```sh\n([^`]*trtis\.serving\.soak[^`]*)```", (ROOT / "docs" / "security.md").read_text())[1]
    command = command.replace("\\\n", " ").replace(".venv/bin/python", sys.executable).replace(
        "--model-repository model_repository", f"--model-repository {detection_repository[0]}").replace(
        "reports/", f"{tmp_path}/")
    run = subprocess.run(["bash", "-c", f"{command.strip()} --minutes 0.3 --warmup 2 --interval 2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    processes = {row["process"] for row in report["memory"]}
    assert {"supervisor", "tritonserver"} < processes and any(p.startswith("detection-network") for p in processes)
    assert report["errors"] == 0 and report["throughput"] > 0


def test_the_documented_burst_runs_and_reports_memory(detection_repository, tmp_path):
    """The burst's two commands as written (20 requests instead of 100, which the test repository's
    queues may all take: tests/serving/test_burst.py fills a queue): each request is answered or
    refused as Overloaded, and the request after it is answered."""
    block = re.search(r"```sh\n([^`]*trtis\.serving\.burst[^`]*)```", (ROOT / "docs" / "security.md").read_text())[1]
    block = block.replace("\\\n", " ").replace(".venv/bin/python", sys.executable).replace(
        "--model-repository model_repository", f"--model-repository {detection_repository[0]}").replace(
        "reports/", f"{tmp_path}/").replace("example/test-data/", f"{ROOT}/example/test-data/")
    make_image, burst = block.strip().splitlines()
    run = subprocess.run(["bash", "-c", f"{make_image} && {burst} --count 20"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (tmp_path / "big.jpg").stat().st_size > 4_000_000
    report = json.loads((tmp_path / "burst.json").read_text())
    assert sum(report["outcomes"].values()) == 20 and set(report["outcomes"]) <= {"ok", "Overloaded"}, report
    assert report["good_after_outcome"] == "ok"
    assert {"supervisor", "tritonserver"} < {row["process"] for row in report["memory"]}
