"""The trt-client command against the real embedded server: the tiny chain (outputs that are not
detections) and the detector-shaped test model (``detector/model.py``)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from client_harness import CLASS_NAMES
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
    run = subprocess.run([*CLI, "--url", tiny_server.grpc_url, "--model", "tiny-chain", "--json", *mode,
                          *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    document = json.loads(run.stdout)
    assert document["class_names"] is None
    results = document["results"]
    assert [r["file"] for r in results] == [str(f) for f in files]
    assert "abc" in results[2]["error"]
    for result, value in zip([results[0], results[1], results[3]], ["1.5", "-3", "12"]):
        np.testing.assert_allclose(result["outputs"]["scores"], tiny.scores(texts(value)), rtol=1e-5, atol=1e-6)


def test_cli_reports_a_missing_model(tiny_server, files):
    run = subprocess.run([*CLI, "--url", tiny_server.grpc_url, "--model", "nope", str(files[0])],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "model 'nope' is not ready" in run.stderr


def test_cli_prints_a_summary_of_outputs_that_are_not_detections(tiny_server, tiny, files):
    run = subprocess.run([*CLI, "--url", tiny_server.grpc_url, "--model", "tiny-chain", str(files[0])],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    values = ", ".join(f"{v:.4g}" for v in tiny.scores(texts("1.5")).ravel().tolist())
    assert run.stdout.splitlines() == [str(files[0]), "  output  datatype  shape   values",
                                       f"  scores  FP32      [1, 2]  {values}"]


def test_cli_takes_a_grpc_target_naming_several_addresses(tiny_server, tiny, files):
    address = tiny_server.grpc_url
    run = subprocess.run([*CLI, "--url", f"ipv4:{address},{address}", "--model", "tiny-chain", "--json", str(files[0])],
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


DETECTIONS = {"two.txt": b"1 0.9 0 0 10 10\n2 0.2 1 1 2 2\n0 0.6 5 5 20.25 20\n",
              "broken.txt": b"not a detection", "none.txt": b"1 0.1 0 0 1 1\n"}


@pytest.fixture
def images(tmp_path):
    """Texts the detector-shaped model reads as detections, one it refuses, and a file that is missing."""
    for name, content in DETECTIONS.items():
        (tmp_path / name).write_bytes(content)
    return [tmp_path / name for name in ("two.txt", "broken.txt", "missing.jpg", "none.txt")]


@pytest.mark.parametrize("mode", [[], ["--async"]])
def test_cli_prints_a_table_of_named_detections_and_an_error_row_per_bad_file(echo_server, images, mode):
    folder = images[0].parent
    run = subprocess.run([*CLI, "--url", echo_server.grpc_url, "--model", "detector", *mode, *map(str, images),
                          str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    two, broken, missing, none = map(str, images)
    lines = run.stdout.splitlines()
    assert lines[:4] == [f"{two}: 2 detection(s) with score >= 0.3",
                         "  class  score  box (x1, y1, x2, y2)",
                         "  dog    0.900  0.0, 0.0, 10.0, 10.0",
                         "  cat    0.600  5.0, 5.0, 20.2, 20.0"]
    assert lines[4].startswith(f"{broken}: error: model 'detector' failed on the request: expected at most 5 lines")
    assert lines[5:] == [f"{missing}: error: no such file", f"{none}: 0 detection(s) with score >= 0.3",
                         f"{folder}: error: not a regular file"]
    assert run.stderr.strip() == "trt-client: 3 of 5 file(s) failed"


def test_cli_threshold_and_top_k_choose_the_rows(echo_server, images):
    run = subprocess.run([*CLI, "--url", echo_server.grpc_url, "--model", "detector", "--threshold", "0.1",
                          "--top-k", "2", str(images[0])], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"{images[0]}: 3 detection(s) with score >= 0.1, the 2 best shown (--top-k)"
    assert [line.split()[0] for line in run.stdout.splitlines()[2:]] == ["dog", "cat"]


def test_cli_json_adds_the_class_names_and_reports_each_bad_file(echo_server, images):
    run = subprocess.run([*CLI, "--url", echo_server.grpc_url, "--model", "detector", "--json", *map(str, images)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    document = json.loads(run.stdout)
    assert document["model"] == "detector" and document["class_names"] == CLASS_NAMES
    two, broken, missing, none = document["results"]
    assert two["outputs"]["classes"] == [[1, 2, 0, 0, 0]]
    assert two["named_classes"] == [["dog", "bird", "cat", "cat", "cat"]]
    assert len(two["outputs"]["scores"][0]) == 5  # every output as the model gave it, below the threshold too
    assert "expected at most 5 lines" in broken["error"] and missing["error"] == "no such file"
    assert none["named_classes"] == [["dog", "cat", "cat", "cat", "cat"]]


def test_cli_says_why_classes_named_only_in_a_label_file_are_indices(echo_server, images):
    run = subprocess.run([*CLI, "--url", echo_server.grpc_url, "--model", "detector-labels", str(images[0])],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert [line.split()[0] for line in run.stdout.splitlines()[2:]] == ["1", "0"]
    assert "label file 'labels.txt' of output 'classes', which Triton does not serve" in run.stderr


@pytest.mark.parametrize("arguments, expected", [
    (["--threshold", "nan"], "is not a finite number"), (["--top-k", "0"], "give 1 or more")])
def test_cli_refuses_a_threshold_or_top_k_that_cannot_work(arguments, expected):
    run = subprocess.run([*CLI, "--model", "detector", *arguments, "file.jpg"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and expected in run.stderr, run.stderr
