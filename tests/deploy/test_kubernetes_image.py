"""What the image build runs, run here: check-backends.sh on real repositories and backend folders,
and the supervisor's files as the build copies them, imported with the standard library alone. The
Dockerfile's copies, environment and command are checked against the Deployment and the Docker
mode. The image itself is not built here (no Docker on these machines, and the base image would be
pulled)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rendered_manifests import (DOCKERFILE, DOCKERIGNORE, KUBERNETES, ROOT, context_files, dockerfile_cmd,
                                dockerfile_copies, dockerfile_env, dockerfile_instructions, image_package)
from trtis import config
from trtis.runtimes import BACKEND_OF_PLATFORM
from trtis.serving import docker

CHECK = KUBERNETES / "check-backends.sh"


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
    ignored = DOCKERIGNORE.read_text().split()
    copied = [source for source, _ in dockerfile_copies()]
    assert copied == ["deploy/kubernetes/check-backends.sh", "${MODEL_REPOSITORY}", "backend/trtis/__init__.py",
                      "backend/trtis/serving/"]
    assert "!deploy/kubernetes/check-backends.sh" in ignored and "!model_repository*" in ignored


def test_the_image_carries_the_supervisor_and_only_what_it_imports(tmp_path):
    """The files the build context lets in from backend/, laid out as the COPY lines put them, run the
    supervisor with the standard library alone (python -S: no site-packages, as the image's python3
    has none of the project's), and every one of them is imported."""
    pythonpath = image_package(tmp_path)
    assert pythonpath == tmp_path / "opt" / "trtis"
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    listed = subprocess.run([sys.executable, "-S", "-c", "import sys, trtis.serving.supervisor; "
                             "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'trtis'))"],
                            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    imported = {str(Path(path).relative_to(pythonpath)) for path in listed.stdout.split()}
    assert imported == {str(Path(path).relative_to("backend")) for path in context_files("backend/")}
    helped = subprocess.run([sys.executable, "-S", "-m", "trtis.serving.supervisor", "--help"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert helped.returncode == 0 and "{run,probe}" in helped.stdout, helped.stderr


def test_the_image_puts_the_package_where_the_docker_mode_mounts_it():
    """Same place, same PYTHONPATH: the supervisor's command line is the same in both."""
    assert dockerfile_env()["PYTHONPATH"] == "/opt/trtis"
    assert dict(dockerfile_copies())["backend/trtis/serving/"] == "/opt/trtis/trtis/serving/"
    run = docker.command(ROOT / "model_repository", "127.0.0.1", 7000, 7001, 7002, shm_prefix="trtis_0123abcd_")
    assert f"{docker.PACKAGE}:/opt/trtis/trtis:ro" in run and "PYTHONPATH=/opt/trtis" in run
    assert docker.PACKAGE == ROOT / "backend" / "trtis"


def test_the_image_runs_the_deployments_command_without_the_key():
    """CMD is the Deployment's container command less the two flags that take the admin key from the
    Secret (a plain docker run has none), and the image exposes the ports that container declares."""
    (deployment,) = yaml.safe_load_all((KUBERNETES / "base" / "deployment.yaml").read_text())
    (triton,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "tritonserver"]
    keyed = [arg for arg in triton["args"] if "$(TRITON_ADMIN_KEY)" in arg]
    assert [arg.split("=", 1)[0] for arg in keyed] == ["--http-restricted-api", "--grpc-restricted-protocol"]
    assert dockerfile_cmd() == [arg for arg in triton["args"] if arg not in keyed]
    (exposed,) = [rest.split() for name, rest in dockerfile_instructions() if name == "EXPOSE"]
    assert [int(port) for port in exposed] == [p["containerPort"] for p in triton["ports"]] == [8001]
    assert "ENTRYPOINT" not in {name for name, _ in dockerfile_instructions()}, "the official image's entrypoint stays"
