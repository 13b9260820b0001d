"""The trt-client command against the real embedded server."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tiny_models import texts

CLI = [sys.executable, "-m", "trt_client.cli"]


@pytest.fixture
def files(tmp_path):
    paths = []
    for name, content in (("a.txt", b"1.5"), ("b.txt", b"-3"), ("bad.txt", b"abc"), ("c.txt", b"12")):
        path = tmp_path / name
        path.write_bytes(content)
        paths.append(path)
    return paths


@pytest.mark.parametrize("mode", [[], ["--async", "--concurrency", "2"]])
def test_cli_prints_json_per_file_and_fails_for_the_bad_one(tiny_server, tiny, files, mode):
    run = subprocess.run([*CLI, "--url", tiny_server.grpc_url, "--model", "tiny-chain", *mode, *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    document = json.loads(run.stdout)
    results = document["results"]
    assert [r["file"] for r in results] == [str(f) for f in files]
    assert "abc" in results[2]["error"]
    for result, value in zip([results[0], results[1], results[3]], ["1.5", "-3", "12"]):
        np.testing.assert_allclose(result["outputs"]["scores"], tiny.scores(texts(value)), rtol=1e-5, atol=1e-6)


def test_cli_reports_a_missing_model_and_a_missing_file(tiny_server, files):
    run = subprocess.run([*CLI, "--url", tiny_server.grpc_url, "--model", "nope", str(files[0])],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "model 'nope' is not ready" in run.stderr
    run = subprocess.run([*CLI, "--model", "tiny-chain", "/no/such/file.jpg"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "no such file" in run.stderr


def test_cli_takes_a_grpc_target_naming_several_addresses(tiny_server, tiny, files):
    address = tiny_server.grpc_url
    run = subprocess.run([*CLI, "--url", f"ipv4:{address},{address}", "--model", "tiny-chain", str(files[0])],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(json.loads(run.stdout)["results"][0]["outputs"]["scores"], tiny.scores(texts("1.5")),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arguments, expected", [
    (["--url", "triton-a:8001", "--url", "triton-b:8001"], "use one DNS name that resolves to every replica"),
    (["--header", "no-equals-sign"], "is not KEY=VALUE"),
    (["--private-key", "client.key"], "private_key given without ssl=True"),
])
def test_cli_refuses_settings_that_cannot_work(files, arguments, expected):
    run = subprocess.run([*CLI, "--model", "tiny-chain", *arguments, str(files[0])], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and expected in run.stderr, run.stderr
