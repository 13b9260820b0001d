"""The README's tour, docs/serving.md, docs/detection.md and the Chinese quick start, run as written
against the served detection example: in a checkout whose model_repository/ is this session's
detection repository (input 256), started with the README's own ``./start.sh`` lines on free ports.
Only the server's address changes (docs/marked_blocks.py says how)."""
from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from docs.marked_blocks import Ports, addressed, blocks_named, checkout, run_shell
from trtis.serving import state_folder
from trtis.serving.ports import free_port


@pytest.fixture(scope="module")
def served(detection_repository, tmp_path_factory):
    """(checkout, ports) with the server the README's start block started; its stop block ends it."""
    root = checkout(tmp_path_factory.mktemp("docs") / "checkout", detection_repository[0])
    ports = Ports(free_port(), free_port(), free_port())
    assert "healthy" in shell_blocks(root, ports, "readme-start").stdout
    try:
        yield root, ports
        run = shell_blocks(root, ports, "readme-stop")
        assert "Server stopped." in run.stdout and not state_folder.running(root / ".triton")
    finally:
        state_folder.stop(root / ".triton")


def shell_blocks(root, ports: Ports, name: str) -> subprocess.CompletedProcess:
    """The shell blocks named ``name``, run one after the other; the output of the last."""
    for block in blocks_named(name):
        run = run_shell(addressed(block.code, ports), root)
    return run


def python_blocks(root, ports: Ports, name: str, monkeypatch) -> dict:
    """The Python blocks named ``name``, run in one namespace from the checkout; that namespace."""
    monkeypatch.chdir(root)
    namespace: dict = {}
    for block in blocks_named(name):
        exec(compile(addressed(block.code, ports, shell=False), block.where, "exec"), namespace)
    return namespace


def test_readme_tour_detects_and_benchmarks(served, monkeypatch):
    root, ports = served
    run = shell_blocks(root, ports, "readme-detect")
    assert re.search(r"3_000001\.jpg: [1-9]\d* detection\(s\) with score >= 0\.5", run.stdout), run.stdout
    assert "run and async_run agree" in run.stdout and (root / "detections" / "3_000001.jpg").is_file()
    results = python_blocks(root, ports, "readme-client", monkeypatch)["results"]
    assert results["boxes"].shape == (1, 100, 4) and results["scores"].shape == results["classes"].shape == (1, 100)
    shell_blocks(root, ports, "readme-bench")
    report = json.loads((root / "reports" / "tour.json").read_text())
    assert [row["concurrency"] for row in report["served"]] == [1, 2]
    assert all(row["errors"] == 0 and row["throughput"] > 0 for row in report["served"])
    assert report["served"][0]["triton"]["detection-network"]["average_batch"] >= 1, "statistics read with the key"


def test_serving_page(served, monkeypatch):
    root, ports = served
    run = shell_blocks(root, ports, "serving-lifecycle").stdout
    assert run.count("Triton is ready") == 2 and "healthy" in run and "Server stopped." in run
    assert state_folder.running(root / ".triton")
    server = python_blocks(root, ports, "serving-python", monkeypatch)["server"]
    assert server.ports != ports and not state_folder.running(server.state_dir), "serve() ran its own server, then stopped it"

    health, metadata, config = shell_blocks(root, ports, "serving-curl").stdout.splitlines()
    assert health == "200" and json.loads(metadata)["name"] == "detection"
    assert json.loads(json.loads(config)["parameters"]["class_names"]["string_value"])[0] == "circle"

    answer = {o["name"]: np.array(o["data"]).reshape(o["shape"])
              for o in json.loads(shell_blocks(root, ports, "serving-infer").stdout)["outputs"]}
    expected = python_blocks(root, ports, "readme-client", monkeypatch)["results"]  # the same image through trt_client
    np.testing.assert_allclose(answer["scores"], expected["scores"], atol=1e-6)
    np.testing.assert_allclose(answer["boxes"], expected["boxes"], atol=1e-3)
    np.testing.assert_array_equal(answer["classes"], expected["classes"])

    metrics = shell_blocks(root, ports, "serving-metrics").stdout
    assert int(re.search(r'^nv_inference_request_success\{model="detection",version="1"\} (\d+)', metrics, re.M)[1]) >= 1
    assert 'nv_inference_exec_count{model="detection-network",version="1"}' in metrics

    stats = json.loads(shell_blocks(root, ports, "serving-stats").stdout)
    assert stats["model_stats"][0]["name"] == "detection" and stats["model_stats"][0]["inference_count"] >= 1
    refused = subprocess.run(["curl", "-s", f"http://127.0.0.1:{ports.http}/v2/models/detection/stats"],
                             capture_output=True, text=True)
    assert "restricted" in refused.stdout, "the statistics need the admin key the page uses"

    logs = shell_blocks(root, ports, "serving-logs").stdout
    assert "successfully loaded 'detection'" in logs and "failed to load" not in logs


def test_detection_page(served):
    root, ports = served
    shell_blocks(root, ports, "detection-dataset")
    assert len(list((root / "reports" / "test-split" / "images").iterdir())) == 8
    runs = [run_shell(line, root, timeout=600) for line in
            addressed(blocks_named("detection-evaluate")[0].code, ports).splitlines()]
    for run in runs:
        result = json.loads(run.stdout.splitlines()[-1])
        assert 0 < result["map"] <= 1 and 0 < result["inprocess_map"] <= 1
    assert "mAP@[.5:.95]" in (root / "reports" / "evaluation.md").read_text()

    lines = addressed(blocks_named("detection-client")[0].code, ports).splitlines()
    found = json.loads(run_shell(lines[0], root).stdout)["example/test-data/3_000001.jpg"]
    assert found and all(d["score"] >= 0.3 and len(d["box"]) == 4 and d["class"].isalpha() for d in found)
    strict = run_shell(lines[1], root).stdout
    assert all(float(score) >= 0.8 for score in re.findall(r"^  \S+\s+(\d\.\d+)", strict, re.M))
    assert len(list((root / "detections" / "strict").iterdir())) == 8


def test_chinese_quick_start_client_code(served, monkeypatch, capsys):
    root, ports = served
    namespace = python_blocks(root, ports, "zh-client", monkeypatch)
    assert namespace["input_id"].startswith("image_") and namespace["names"][0] == "circle"
    printed = capsys.readouterr().out.splitlines()
    assert printed and all(line.split()[0] in namespace["names"] for line in printed)
