"""bench.sh for a few seconds against the real server: well-formed reports, no timing assertions."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from detection import pipeline

BENCH = Path(__file__).resolve().parents[2] / "example" / "detection" / "bench.sh"


def test_bench_writes_json_markdown_and_plot_with_every_field(detection_server, detection_repository, tmp_path):
    run = subprocess.run([str(BENCH), "--url", detection_server.grpc_url, "--model-repository",
                          str(detection_repository[0]), "--concurrency", "1", "4",
                          "--seconds", "2", "--warmup", "1", "--images", "4", "--naive-port", "0", "--clients", "2",
                          "--output", str(tmp_path), "--name", "ci"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "ci.json").read_text())
    assert [row["concurrency"] for row in report["served"]] == [1, 4]
    assert "detection-network: 2 x CPU" in report["settings"], "the served settings, read from the server"
    for row in report["served"]:
        assert {"concurrency", "throughput", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "errors"} <= set(row)
        assert row["clients"] == 2
        assert all({"gpu", "utilization_percent", "memory_used_mib"} <= set(g) for g in row["gpus"])
        assert row["gpus"] or shutil.which("nvidia-smi") is None
        assert row["errors"] == 0 and row["requests"] > 0 and row["throughput"] > 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"]
        for model in (pipeline.PREPROCESS, pipeline.NETWORK, pipeline.POSTPROCESS):
            stats = row["triton"][model]
            assert stats["inferences"] > 0 and stats["average_batch"] >= 1
            assert {"queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"} <= set(stats)
    assert report["in_process"]["throughput"] > 0 and report["in_process"]["batch"] in (1, 8)
    assert [row["batch"] for row in report["network_limit"]] == [1, 8]
    assert all(row["throughput"] > 0 for row in report["network_limit"]) and report["network_device"] == "cpu"
    assert [row["concurrency"] for row in report["naive"]] == [1, 4]
    assert all(row["throughput"] > 0 and row["errors"] == 0 for row in report["naive"])
    assert "| concurrency | Triton req/s |" in (tmp_path / "ci.md").read_text()
    assert (tmp_path / "ci.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
