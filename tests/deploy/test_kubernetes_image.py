"""What the image build runs, run here: check-backends.sh on real repositories and backend folders.
The image itself is not built here (no Docker on these machines, and the base image would be pulled)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rendered_manifests import KUBERNETES, ROOT
from trtis import config
from trtis.runtimes import BACKEND_OF_PLATFORM
from trtis.serving import docker

CHECK = KUBERNETES / "check-backends.sh"
DOCKERFILE = KUBERNETES / "Dockerfile"


def check(repository: Path, backends: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK), str(repository), str(backends)], capture_output=True, text=True, timeout=60)


def backends_folder(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
    return root


def test_tiny_repository_passes_with_every_backend_and_names_the_model_without_its_own(tiny, tmp_path):
    everything = backends_folder(tmp_path / "all", ["onnxruntime", "python", "pytorch", "tensorflow", "tensorrt"])
    assert check(tiny.root, everything).returncode == 0
    after_25_02 = backends_folder(tmp_path / "no-tf", ["onnxruntime", "python", "pytorch", "tensorrt"])
    run = check(tiny.root, after_25_02)
    assert run.returncode == 1
    assert "model tiny-text needs the tensorflow backend" in run.stderr and "--preprocess-format python" in run.stderr
    assert "tiny-affine" not in run.stderr and "tiny-chain" not in run.stderr


@pytest.mark.parametrize("platform, backend", [*BACKEND_OF_PLATFORM.items(), (None, "python")])
def test_each_platform_needs_the_backend_that_serves_it(tmp_path, platform, backend):
    """The script's rule (a platform's backend is its prefix) agrees with trtis.runtimes' table."""
    tensors = dict(inputs=[config.Tensor("x", np.float32, [1])], outputs=[config.Tensor("y", np.float32, [1])])
    made = config.model_config("m", platform=platform, **tensors) if platform else config.model_config("m", backend=backend, **tensors)
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text(config.to_text(made))
    assert check(tmp_path / "repo", backends_folder(tmp_path / "with", [backend])).returncode == 0
    others = [b for b in [*BACKEND_OF_PLATFORM.values(), "python"] if b != backend]
    run = check(tmp_path / "repo", backends_folder(tmp_path / "without", others))
    assert run.returncode == 1 and f"model m needs the {backend} backend" in run.stderr


def test_a_missing_or_empty_repository_is_refused(tmp_path):
    run = check(tmp_path / "none", tmp_path)
    assert run.returncode == 2 and "no model repository" in run.stderr
    (tmp_path / "empty").mkdir()
    run = check(tmp_path / "empty", tmp_path)
    assert run.returncode == 2 and "run convert.sh first" in run.stderr


def test_dockerfile_uses_the_projects_image_tag_and_pins():
    """The Dockerfile cannot import the project: its defaults are checked against the sources of truth."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG TRITON_TAG=(\S+)$", text, re.M)[1] + "-py3" == docker.DEFAULT_IMAGE.rsplit(":", 1)[1]
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    for package in ("opencv-python-headless", "pillow"):
        assert f'"{package}=={pins[package]}"' in text, package
    assert pins["numpy"].startswith("1.") and '"numpy<2"' in text
    ignored = (KUBERNETES / "Dockerfile.dockerignore").read_text().split()
    copied = re.findall(r"^COPY (\S+) ", text, re.M)
    assert copied == ["deploy/kubernetes/check-backends.sh", "${MODEL_REPOSITORY}"]
    assert "!deploy/kubernetes/check-backends.sh" in ignored and "!model_repository*" in ignored
