"""What the image build runs, run here: check-backends.sh on real repositories and backend folders,
the package as the build copies it (the supervisor imported with the standard library alone), and
the backend layout the build and install.sh share. The Dockerfile's copies, installs, environment
and command are checked against constraints.txt, the Deployment and the Docker mode; pod_runner
serves repositories from the image's tree (test_kubernetes_server_args, test_kubernetes_pod). The
image itself is not built here (no Docker on these machines, and the base image would be pulled)."""
from __future__ import annotations

import importlib.metadata
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
from trtis import config, repository
from trtis.runtimes import BACKEND_OF_PLATFORM
from trtis.serving import Ports, ServerConfig, docker, embedded

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
    installs = [rest for name, rest in dockerfile_instructions() if name == "RUN" and "pip install" in rest]
    (run,) = installs
    commands = [part for part in run.split("&&") if "pip install" in part]
    assert len(commands) == 2 and all("-c /opt/trtis/constraints.txt" in part for part in commands), commands
    named = {re.sub(r"\[\w+\]$", "", word.strip('"')) for part in commands
             for word in part.split("constraints.txt", 1)[1].split()}  # extras left out: tritonclient[grpc]
    assert {"torch", "torchvision", "opencv-python-headless", "pillow", "tritonclient", "grpcio", "protobuf"} <= named
    assert all(package in pins for package in named - {"numpy<2"}), named
    assert pins["numpy"].startswith("1.") and "numpy<2" in named
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M) and "cpu) torch_index=" in run and "gpu) torch_index=" in run
    ignored = DOCKERIGNORE.read_text().split()
    copied = [source for source, _ in dockerfile_copies()]
    assert copied == ["constraints.txt", "backend/trtis/", "deploy/kubernetes/check-backends.sh", "${MODEL_REPOSITORY}"]
    assert {"!deploy/kubernetes/check-backends.sh", "!model_repository*", "!constraints.txt", "!backend/trtis"} <= set(ignored)


def test_the_image_carries_the_package_and_runs_the_supervisor_with_the_standard_library(tmp_path):
    """The files the build context lets in from backend/ (the whole package, without byte code), laid
    out as the COPY lines put them: the supervisor runs from them with the standard library alone
    (python -S: no site-packages), as each probe does, and the backends' runtimes import there."""
    pythonpath = image_package(tmp_path)
    assert pythonpath == tmp_path / "opt" / "trtis"
    files = {str(Path(path).relative_to("backend")) for path in context_files("backend/")}
    assert {"trtis/serving/supervisor.py", "trtis/serving/backend_tree.py", "trtis/runtimes.py",
            "trtis/serving/backends/torch_compile/model.py"} <= files
    assert not any("__pycache__" in path for path in files)
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    helped = subprocess.run([sys.executable, "-S", "-m", "trtis.serving.supervisor", "--help"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert helped.returncode == 0 and "{run,probe}" in helped.stdout, helped.stderr


def test_the_image_lays_out_the_backends_with_the_script_install_sh_runs(tmp_path):
    """One source of truth: the Dockerfile runs trtis.serving.backend_tree over the image's backends
    (native ones stay, the project's others are copied where their runtime's packages import: so a
    TensorFlow graph is still refused on a tag without TensorFlow), and the embedded assembly runs
    the same lay_out. A folder without the python backend is refused, saying why."""
    (run,) = [rest for name, rest in dockerfile_instructions() if name == "RUN" and "backend_tree" in rest]
    assert "python3 -m trtis.serving.backend_tree /opt/tritonserver/backends --copy --importable" in run
    backends = tmp_path / "backends"
    (backends / "python").mkdir(parents=True)
    (backends / "onnxruntime").mkdir()
    (backends / "onnxruntime" / "libtriton_onnxruntime.so").write_bytes(b"")  # what the official image has
    env = {**os.environ, "PYTHONPATH": str(image_package(tmp_path / "image"))}
    laid = subprocess.run([sys.executable, "-m", "trtis.serving.backend_tree", str(backends), "--copy", "--importable"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert laid.returncode == 0, laid.stderr
    assert "onnxruntime (native)" in laid.stdout and "torch_compile (project)" in laid.stdout
    assert "tensorrt (left out)" in laid.stdout  # no tensorrt package here
    assert (backends / "torch_compile" / "model.py").is_file() and not (backends / "torch_compile").is_symlink()
    assert not (backends / "onnxruntime" / "model.py").exists() and not (backends / "tensorrt").exists()
    assert sorted(p.name for p in (embedded.DEFAULT_HOME / "backends").iterdir()) == sorted(
        [p.name for p in backends.iterdir()] + ["tensorrt"])
    refused = subprocess.run([sys.executable, "-m", "trtis.serving.backend_tree", str(tmp_path / "none")], env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "has no python backend" in refused.stderr


def test_the_image_puts_the_package_where_the_docker_mode_mounts_it():
    """Same place, same PYTHONPATH: the supervisor's command line is the same in both."""
    assert dockerfile_env()["PYTHONPATH"] == "/opt/trtis"
    assert dockerfile_env()["TRTIS_STATE_DIR"] == docker.STATE_DIR  # the compiled network's cache, kept
    assert dict(dockerfile_copies())["backend/trtis/"] == "/opt/trtis/trtis/"
    run = docker.command(ROOT / "model_repository", ServerConfig(ports=Ports(7000, 7001, 7002)), shm_prefix="trtis_0123abcd_")
    assert f"{docker.PACKAGE}:/opt/trtis/trtis:ro" in run and "PYTHONPATH=/opt/trtis" in run
    assert f"TRTIS_STATE_DIR={docker.STATE_DIR}" in run
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


def test_the_docker_mode_picks_the_projects_image_for_the_projects_backends(tiny, tmp_path):
    """A repository that needs torch_compile (no official image has it) runs in the project's GPU
    image, whose tag carries the project's version; its build command is this Dockerfile's, from the
    patched tag; an official repository keeps the official image."""
    compiled = config.model_config("network", backend="torch_compile", max_batch_size=4,
                                   inputs=[config.Tensor("image", np.float32, [3, 8, 8])],
                                   outputs=[config.Tensor("boxes", np.float32, [4])])
    repository.write_repository(tmp_path / "repo", [repository.Model(compiled, None)])
    assert docker.image_for(tmp_path / "repo") == (docker.PROJECT_IMAGE, None)
    assert docker.PROJECT_IMAGE == f"trtis-detection:{importlib.metadata.version('trtis')}-gpu"
    assert f"--build-arg TRITON_TAG={docker.PATCHED_IMAGE.rsplit(':', 1)[1].removesuffix('-py3')}" in docker.PROJECT_BUILD
    assert "--build-arg VARIANT=gpu" in docker.PROJECT_BUILD and "-f deploy/kubernetes/Dockerfile" in docker.PROJECT_BUILD
    assert docker.image_for(tiny.root)[0] == docker.TENSORFLOW_IMAGE  # the tiny repository has a TensorFlow graph
