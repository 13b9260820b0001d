"""trtis.bench on the tiny models: requests from the config, a real load against the real server,
Triton's statistics for every composing model, the in-process runner, the reports. No timing
is asserted: only that each figure is there and consistent."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_models import texts
from trt_client import client
from trtis import bench, repository
from trtis.bench import baselines, gpu_metrics, report, tune
from trtis.bench.in_process import InProcessModel
from trtis.bench.inputs import InputSpec, inputs_of
from trtis.serving import serve

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ("tiny-text", "tiny-affine", "tiny-head")
SHORT = {"seconds": 1, "warmup": 0.3}


@pytest.fixture(scope="module")
def number_files(tmp_path_factory) -> list[Path]:
    """Files for the chain's BYTES input: the text model reads a number."""
    folder = tmp_path_factory.mktemp("numbers")
    for index, value in enumerate(["1.5", "-2", "40", "7"]):
        (folder / f"{index}.txt").write_text(value)
    return bench.files_under([folder])


def test_in_process_ensemble_answers_as_the_server(tiny, tiny_server):
    values = texts(1.5, -2, 40)
    with InProcessModel(tiny.root, "tiny-chain") as runner, client.Inference(tiny_server.grpc_url, "tiny-chain") as served:
        assert runner.models == list(CHAIN) and set(runner.devices.values()) == {"cpu"}
        np.testing.assert_allclose(runner({"text": values})["scores"], served.run(input={"text": values})["scores"],
                                   rtol=1e-5, atol=1e-6)
        feeds = runner.step_feeds({"text": values})
    assert list(feeds) == list(CHAIN)
    np.testing.assert_array_equal(feeds["tiny-affine"]["features"], tiny.features(values))


def test_in_process_batch_sizes_outside_the_model_are_refused_before_any_run(tiny):
    with InProcessModel(tiny.root, "tiny-chain") as runner:
        requests = [{"text": texts(1.0)}]
        for batches in ([], [0, 1], [1, 16]):  # tiny-chain takes batches of 1 to 8
            with pytest.raises(ValueError, match="takes batches of 1 to 8"):
                baselines.in_process_limit(runner, requests, batches, seconds=0.1)


def test_a_step_without_runtime_needs_an_override(tiny, tmp_path):
    configs = repository.read_configs(tiny.root)
    text = configs["tiny-text"]
    text.ClearField("platform")
    text.backend = "python"
    root = tune.scratch_repository(tiny.root, configs, tmp_path / "repository")
    with pytest.raises(ValueError, match="'tiny-text' runs on backend 'python'.*overrides="):
        InProcessModel(root, "tiny-chain")
    with pytest.raises(ValueError, match="does not run"):
        InProcessModel(root, "tiny-chain", {"tiny-other": lambda feed: feed})
    values = texts(3, 0.25)
    with InProcessModel(root, "tiny-chain", {"tiny-text": lambda feed: {"features": tiny.features(feed["text"])}}) as runner:
        np.testing.assert_allclose(runner({"text": values})["scores"], tiny.scores(values), rtol=1e-5, atol=1e-6)


def test_random_requests_follow_the_config_and_refuse_what_they_cannot_make(tiny):
    configs = repository.read_configs(tiny.root)
    (affine,) = inputs_of(configs["tiny-affine"])
    requests = bench.random_requests([affine], count=3)
    assert len(requests) == 3 and all(r["features"].shape == (1, 2) and r["features"].dtype == np.float32
                                      for r in requests)
    with pytest.raises(ValueError, match="'text' is BYTES.*files"):
        bench.random_requests(inputs_of(configs["tiny-chain"]))
    variable = InputSpec("pixels", "UINT8", (-1, 3), batching=True)
    with pytest.raises(ValueError, match="'pixels' has variable dims"):
        bench.random_requests([variable])
    (pixels,) = bench.random_requests([variable], 1, shapes={"pixels": [5, 3]})
    assert pixels["pixels"].shape == (1, 5, 3) and pixels["pixels"].dtype == np.uint8
    with pytest.raises(ValueError, match="does not fit"):
        bench.random_requests([variable], 1, shapes={"pixels": [5, 4]})
    with pytest.raises(ValueError, match="one BYTES input"):
        bench.file_requests([affine], [Path(__file__)])


def test_benchmark_of_the_ensemble_with_files_statistics_baselines_and_reports(tiny, tiny_server, number_files,
                                                                               tmp_path):
    requests, source = bench.requests_for(bench.model_inputs(tiny_server.grpc_url, "tiny-chain"), number_files)
    assert source == "4 input files" and requests[0]["text"].shape == (1, 1)
    found = bench.benchmark(bench.Target(tiny_server.grpc_url, "tiny-chain", metrics_url=tiny_server.metrics_url),
                            bench.Load(requests, [1, 2], **SHORT), bench.Baselines(tiny.root, alone="tiny-affine"),
                            bench.Titles(source=source, reproduce="python -m trtis.bench --model tiny-chain"))
    assert [row["concurrency"] for row in found["served"]] == [1, 2]
    for row in found["served"]:
        assert row["errors"] == 0 and row["requests"] > 0 and row["throughput"] > 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert list(row["triton"]) == list(CHAIN), "every composing model, found from the config"
        assert all(stats["inferences"] > 0 and stats["average_batch"] >= 1 for stats in row["triton"].values())
        assert row["gpus"] == [], "a CPU server exports no GPU series"
    assert "tiny-affine: 2 x CPU, max batch 8, queue delay 20000 us" in found["settings"]
    assert found["in_process"]["batch"] in (1, 8) and found["in_process"]["throughput"] > 0
    assert [row["batch"] for row in found["network_limit"]] == [1, 8] and found["network_device"] == "cpu"
    assert [row["concurrency"] for row in found["naive"]] == [1, 2]
    assert all(row["throughput"] > 0 and row["errors"] == 0 for row in found["naive"])
    paths = report.write(found, tmp_path, "chain")
    assert json.loads(paths[0].read_text())["served"][0]["triton"].keys() == set(CHAIN)
    markdown = paths[1].read_text()
    assert "| concurrency | Triton req/s |" in markdown and "tiny-head queue ms" in markdown
    assert "none (Triton's metrics endpoint reports no GPU)" in markdown
    assert markdown.rstrip().splitlines()[-1] == "Measure your own machine: `python -m trtis.bench --model tiny-chain`"
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_of_a_single_model_with_random_inputs_and_two_client_processes(tiny_server):
    requests, _ = bench.requests_for(bench.model_inputs(tiny_server.grpc_url, "tiny-affine"), count=4)
    unreachable = f"http://127.0.0.1:{tiny_server.ports.http}/no-metrics-here"
    found = bench.benchmark(bench.Target(tiny_server.grpc_url, "tiny-affine", metrics_url=unreachable),
                            bench.Load(requests, [2], **SHORT, clients=2), progress=False)
    (row,) = found["served"]
    assert row["clients"] == 2 and row["errors"] == 0 and row["requests"] > 0
    assert list(row["triton"]) == ["tiny-affine"] and row["triton"]["tiny-affine"]["inferences"] > 0
    assert found["in_process"]["batch"] is None and found["naive"] == [], "no repository: no baselines"
    markdown = report.markdown(found)
    assert "2 client processes" in found["title"] and "vs limit (not measured)" in markdown
    assert "GPU utilisation and memory: not read (cannot read Triton's metrics" in markdown, "said, not hidden"


def test_requests_the_model_refuses_are_counted_with_the_reason(tiny_server, tmp_path):
    (tmp_path / "bad.txt").write_text("not a number")
    requests = bench.file_requests(bench.model_inputs(tiny_server.grpc_url, "tiny-chain"), [tmp_path / "bad.txt"])
    found = bench.benchmark(bench.Target(tiny_server.grpc_url, "tiny-chain"), bench.Load(requests, [1], seconds=0.5, warmup=0),
                            progress=False)
    (row,) = found["served"]
    assert row["errors"] > 0 and row["requests"] == 0 and "tiny-text" in row["first_error"]


def test_gpu_metrics_are_read_from_triton_and_an_unreachable_endpoint_is_named(tiny_server):
    assert gpu_metrics.read(tiny_server.metrics_url) == []
    assert gpu_metrics.read_settled(tiny_server.metrics_url) == [], "a server without GPUs has nothing to wait for"
    unreachable = tiny_server.metrics_url.replace(str(tiny_server.ports.metrics), str(tiny_server.ports.http + 40000))
    with pytest.raises(gpu_metrics.MetricsUnavailable, match="cannot read Triton's metrics"):
        gpu_metrics.read(unreachable)


def test_a_restricted_server_is_measured_with_its_admin_key_and_refused_clearly_without(tiny, tmp_path):
    with serve(tiny.root, restricted=True) as server:
        key = tmp_path / "admin.key"
        key.write_text(server.admin_key)
        command = [sys.executable, "-m", "trtis.bench", "--url", server.grpc_url, "--metrics-url", server.metrics_url,
                   "--model", "tiny-affine", "--no-baselines", "--concurrency", "1", "--seconds", "0.5", "--warmup",
                   "0.2", "--output", str(tmp_path), "--name", "locked"]
        refused = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 1 and "needs its admin key" in refused.stderr
        assert not (tmp_path / "locked.json").exists()
        run = subprocess.run([*command, "--admin-key-file", str(key)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "locked.json").read_text())["served"][0]["triton"]["tiny-affine"]["inferences"] > 0


def _performance_doc_blocks(language: str) -> list[str]:
    text = (ROOT / "docs" / "performance" / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_performance_doc_library_sample_runs_as_written(tiny, tmp_path, monkeypatch):
    """Only the first line (the user's repository, model and files) and the measured time change."""
    (sample,) = _performance_doc_blocks("python")
    first, rest = sample.split("\n", 1)
    assert first.startswith("repository, model, files = ") and "seconds=10" in rest
    (tmp_path / "numbers").mkdir()
    (tmp_path / "numbers" / "1.txt").write_text("2.5")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(f"repository, model, files = {str(tiny.root)!r}, 'tiny-chain', ['numbers']\n"
         + rest.replace("seconds=10", "seconds=0.5, warmup=0.2"), namespace)
    found = json.loads((tmp_path / "reports" / "my-model.json").read_text())
    assert [row["concurrency"] for row in found["served"]] == [1, 2, 4] and found["in_process"]["throughput"] > 0


def test_the_command_line_of_the_performance_doc_runs_as_written(tiny_server, number_files, tmp_path):
    """The doc's ``python -m trtis.bench`` line, with the test server, its files and one short level appended."""
    (command,) = [line for block in _performance_doc_blocks("bash") for line in block.splitlines()
                  if line.startswith("python -m trtis.bench --")]
    run = subprocess.run([sys.executable, *command.split()[1:], "--url", tiny_server.grpc_url, "--metrics-url",
                          tiny_server.metrics_url, "--model", "tiny-chain", "--no-baselines", "--input-files",
                          *map(str, number_files), "--concurrency", "1", "--seconds", "0.5", "--warmup", "0.2",
                          "--output", str(tmp_path), "--name", "cli"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads((tmp_path / "cli.json").read_text())
    assert found["model"] == "tiny-chain" and found["served"][0]["requests"] > 0
    bad = subprocess.run([sys.executable, "-m", "trtis.bench", "--url", tiny_server.grpc_url, "--model", "tiny-chain",
                          "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "'text' is BYTES" in bad.stderr, "a clear refusal before any load"


@pytest.mark.parametrize("given, said", [({"requests": []}, "no requests to send"),
                                         ({"levels": [0]}, "levels and clients must be at least 1"),
                                         ({"clients": 0}, "levels and clients must be at least 1"),
                                         ({"seconds": 0}, "seconds positive")])
def test_a_load_that_cannot_be_measured_is_refused_before_any_server_is_asked(given, said):
    with pytest.raises(ValueError, match=said):
        bench.Load(**{"requests": [{"x": np.zeros((1, 1), np.float32)}], "levels": [1], **given})
