"""convert.sh and client.sh as a user runs them."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from detection import pipeline
from detection.convert import DEFAULT_CLASSES
from detection.network import NetworkSpec, save_checkpoint
from detection.network.checkpoint import random_network
from trtis import repository

ROOT = Path(__file__).resolve().parents[2]
CONVERT = ROOT / "example" / "detection" / "convert.sh"
CLIENT = ROOT / "example" / "detection" / "client.sh"


def test_convert_sh_turns_a_users_official_checkpoint_into_a_repository_at_the_default_size(tmp_path):
    spec = NetworkSpec(["cat", "dog", "bird"])
    checkpoint = tmp_path / "user" / "model_best.pth"
    network = random_network(spec, seed=5)
    save_checkpoint(network, spec, checkpoint, epoch=140)
    state = torch.load(checkpoint, weights_only=True)
    torch.save({"epoch": 140, "state_dict": {f"module.{k}": v for k, v in state["state_dict"].items()}}, checkpoint)
    run = subprocess.run([str(CONVERT), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "repo"),
                          "--max-batch-size", "4", "--network-instances", "3"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "network: PyTorch vs ONNX" in run.stdout and " NO" not in run.stdout
    configs = repository.read_configs(tmp_path / "repo")
    assert sorted(configs) == sorted([pipeline.ENSEMBLE, pipeline.PREPROCESS, pipeline.NETWORK, pipeline.POSTPROCESS])
    network_config = configs[pipeline.NETWORK]
    assert list(network_config.input[0].dims) == [3, 512, 512]
    assert list(network_config.output[0].dims) == [3, 128, 128], "three classes at stride 4"
    assert network_config.max_batch_size == 4 and network_config.instance_group[0].count == 3
    assert configs[pipeline.ENSEMBLE].max_batch_size == 4
    assert json.loads(configs[pipeline.ENSEMBLE].parameters["class_names"].string_value) == ["cat", "dog", "bird"]
    assert (tmp_path / "repo" / pipeline.POSTPROCESS / "labels.txt").read_text().split() == ["cat", "dog", "bird"]
    assert (tmp_path / "repo" / pipeline.NETWORK / "1" / "model.onnx").stat().st_size > 50e6


def test_convert_sh_refuses_bad_options(tmp_path):
    run = subprocess.run([str(CONVERT), "--random-init", "0", "--input-size", "100", "--output", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "multiple of 32" in run.stderr
    run = subprocess.run([str(CONVERT), "--checkpoint", str(tmp_path / "none.pth"), "--output", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and f"checkpoint {tmp_path / 'none.pth'} not found" in run.stderr


@pytest.mark.parametrize("options, message", [
    (["--gpus", "0,x"], "not a list of GPU numbers"),
    (["--gpus", "1,1"], "distinct"),
    (["--gpus", "0"], "the onnx format runs on the CPU"),
    (["--gpus", "0", "--network-format", "torchscript"], "this machine has no CUDA GPU"),
])
def test_convert_sh_refuses_gpus_it_cannot_use(tmp_path, options, message):
    if torch.cuda.is_available() and "torchscript" in options:
        pytest.skip("this machine has a GPU: the option is valid here")
    run = subprocess.run([str(CONVERT), "--random-init", "0", "--input-size", "64", "--preprocess-format", "python",
                          "--output", str(tmp_path / "repo"), *options], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and message in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "repo").exists(), "nothing is written when an option is refused"


def test_client_sh_prints_detections_and_writes_annotated_images(detection_server, tmp_path):
    run = subprocess.run([str(CLIENT), "--url", detection_server.grpc_url, "--output", str(tmp_path / "out"),
                          "--threshold", "0"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "run and async_run agree on all 8 image(s)" in run.stdout
    assert "3_000006.png: 100 detection(s)" in run.stdout  # threshold 0: all top-100
    assert any(name in run.stdout for name in DEFAULT_CLASSES)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 8 and all(name.endswith(".jpg") for name in written)
    run = subprocess.run([str(CLIENT), "--url", detection_server.grpc_url, "--model", "nope",
                          str(ROOT / "example" / "test-data" / "3_000000.jpg")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1 and "model 'nope' version 1 is not ready" in run.stderr


def test_client_sh_reports_a_missing_or_bad_image_and_goes_on(detection_server, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    run = subprocess.run([str(CLIENT), "--url", detection_server.grpc_url, "--output", str(tmp_path / "out"),
                          str(tmp_path / "missing.jpg"), str(tmp_path / "broken.jpg"),
                          str(ROOT / "example" / "test-data" / "3_000000.jpg")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "3_000000.jpg:" in run.stdout and "missing.jpg: no such file" in run.stderr
    assert "broken.jpg: " in run.stderr and "detection-preprocess" in run.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["3_000000.jpg"]


# What third-party libraries print unless asked: TensorFlow's absl INFO lines, libpng's iCCP warning
# (a photo of the calibration images' backgrounds), ONNX Runtime's quantization hint.
NOISE = ("I0000", "absl::InitializeLog", "libpng warning", "pre-processing before quantization")


def test_convert_sh_is_quiet_unless_verbose_and_its_table_lines_up(tmp_path):
    common = [str(CONVERT), "--random-init", "0", "--input-size", "128", "--network-format", "onnx-int8",
              "--calibration-images", "18"]  # image 17 of the validation split has the PNG libpng warned about
    run = subprocess.run([*common, "--output", str(tmp_path / "quiet")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert [noise for noise in NOISE if noise in run.stderr] == [], run.stderr[-3000:]
    table = [line for line in run.stdout.splitlines() if line.endswith(("  ok", "  yes", "  NO"))]
    assert any("ONNX vs INT8 ONNX (cpu form)" in line for line in table)
    assert len({len(line.rsplit(" ", 1)[0].rstrip()) for line in table}) == 1, "\n".join(table)
    verbose = subprocess.run([*common, "--output", str(tmp_path / "verbose"), "--verbose"], capture_output=True,
                             text=True, timeout=600)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    # TensorFlow's absl INFO lines (its oneDNN notice appears only on some CPUs) and the quantization hint.
    assert "I0000" in verbose.stderr and "pre-processing before quantization" in verbose.stderr
