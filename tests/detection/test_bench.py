"""bench.sh for a few seconds against the real server: well-formed reports, quiet baselines, no
timing assertions; and the OpenCV preprocess the in-process baseline runs for a Python-model
repository."""
from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from served_repository import OPENCV_PREPROCESS
from detection import pipeline, workload
from detection.convert import CPU_NETWORK_INSTANCES
from trtis import config, repository
from trtis.bench.baselines import stacked
from trtis.bench.in_process import InProcessModel
from trt_client import client

ROOT = Path(__file__).resolve().parents[2]


def doc_command(script: str) -> list[str]:
    """The docs/performance/README.md command line of ``script``, split as the shell would."""
    text = (ROOT / "docs" / "performance" / "README.md").read_text()
    (line,) = re.findall(rf"^example/detection/{script} .*$", text, flags=re.M)
    return [str(ROOT / line.split()[0]), *line.split()[1:]]


def test_the_doc_bench_command_writes_json_markdown_and_plot_with_every_field(detection_server, detection_repository,
                                                                             tmp_path):
    run = subprocess.run([*doc_command("bench.sh"), "--url", detection_server.grpc_url, "--metrics-url",
                          detection_server.metrics_url, "--model-repository", str(detection_repository[0]),
                          "--concurrency", "1", "4", "--seconds", "2", "--warmup", "1", "--images", "4",
                          "--naive-port", "0", "--clients", "2", "--output", str(tmp_path), "--name", "ci"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "POST /infer" not in run.stderr and "development server" not in run.stderr, "the naive server is quiet"
    report = json.loads((tmp_path / "ci.json").read_text())
    assert [row["concurrency"] for row in report["served"]] == [1, 4]
    assert f"detection-network: {CPU_NETWORK_INSTANCES} x CPU" in report["settings"], "the settings, read from the server"
    for row in report["served"]:
        assert {"concurrency", "throughput", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "errors"} <= set(row)
        assert row["clients"] == 2 and row["gpus"] == [], "Triton's metrics: no GPU series on a CPU server"
        assert row["errors"] == 0 and row["requests"] > 0 and row["throughput"] > 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert list(row["triton"]) == [pipeline.PREPROCESS, pipeline.NETWORK, pipeline.POSTPROCESS]
        for stats in row["triton"].values():
            assert stats["inferences"] > 0 and stats["average_batch"] >= 1
            assert {"queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"} <= set(stats)
    assert report["in_process"]["throughput"] > 0 and report["in_process"]["batch"] in (1, 8)
    in_process = report["in_process_levels"]
    assert [row["concurrency"] for row in in_process] == [2, 8], "as many requests in flight as 2 clients keep"
    assert all(row["throughput"] > 0 and row["errors"] == 0 and row["p50_ms"] > 0 for row in in_process)
    assert [row["batch"] for row in report["network_limit"]] == [1, 8]
    assert all(row["throughput"] > 0 for row in report["network_limit"]) and report["network_device"] == "cpu"
    assert [row["concurrency"] for row in report["naive"]] == [1, 4]
    assert all(row["throughput"] > 0 and row["errors"] == 0 for row in report["naive"])
    markdown = (tmp_path / "ci.md").read_text()
    assert "| concurrency | Triton req/s |" in markdown and "| network batch | network queue ms |" in markdown
    assert "| in process req/s | vs in process |" in markdown
    served = report["served"][0]["throughput"] / in_process[0]["throughput"]
    level_one = next(line for line in markdown.splitlines() if line.startswith("| 1 |"))
    assert f"| {in_process[0]['throughput']} | {served:.2f}x |" in level_one, "level 1 (2 clients) against 2 in flight"
    assert markdown.rstrip().splitlines()[-1].startswith("Measure your own machine: `./start.sh --restart && "
                                                         "example/detection/bench.sh --concurrency 1 4")
    assert (tmp_path / "ci.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_opencv_preprocess_stands_in_where_the_repository_serves_the_python_model(detection_server,
                                                                                     detection_repository, tmp_path):
    source, root = detection_repository[0], tmp_path / "repository"
    root.mkdir()
    for name in (pipeline.NETWORK, pipeline.POSTPROCESS, pipeline.ENSEMBLE):
        (root / name).symlink_to(source / name, target_is_directory=True)
    shutil.copytree(source / OPENCV_PREPROCESS, root / pipeline.PREPROCESS, symlinks=True)
    python_model = repository.read_configs(source)[OPENCV_PREPROCESS]
    python_model.name = pipeline.PREPROCESS
    (root / pipeline.PREPROCESS / "config.pbtxt").write_text(config.to_text(python_model))

    overrides = workload.overrides(root)
    assert list(overrides) == [pipeline.PREPROCESS] and workload.overrides(source) == {}, "only for the Python model"
    requests, _ = workload.requests(None, 2)
    batch = stacked(requests, 2)
    with client.Inference(detection_server.grpc_url, OPENCV_PREPROCESS) as served:
        expected = served.run(input=batch)
    for copy in (overrides[pipeline.PREPROCESS], pickle.loads(pickle.dumps(overrides[pipeline.PREPROCESS]))):
        found = copy(batch)  # the naive server's process gets a pickled copy
        for name in (pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE):
            np.testing.assert_allclose(found[name], expected[name], atol=1e-5)
    with InProcessModel(root, pipeline.ENSEMBLE, overrides) as runner:
        outputs = runner(batch)
    assert outputs[pipeline.BOXES].shape == (2, pipeline.TOP_K, 4) and outputs[pipeline.SCORES].shape == (2, pipeline.TOP_K)
