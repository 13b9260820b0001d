"""The Docker form of the server: the official Triton image on the GPUs, as the tutorial ran it.

The image tag must still carry every backend the repository needs: the native TensorFlow
backend left the images after 25.02, so that is the default.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:25.02-py3"
CONTAINER = "trtis-tritonserver"


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)


def unavailable_reason(image: str = DEFAULT_IMAGE) -> str | None:
    """Why Docker mode cannot run here, or None when Docker, the NVIDIA runtime and the image are present."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    info = _docker("info", "--format", "{{json .Runtimes}}")
    if info.returncode != 0:
        return f"no Docker engine answers ({info.stderr.strip().splitlines()[-1] if info.stderr.strip() else 'docker info failed'})"
    if "nvidia" not in json.loads(info.stdout or "{}"):
        return "Docker has no NVIDIA runtime (install the NVIDIA Container Toolkit)"
    if _docker("image", "inspect", image).returncode != 0:
        return f"image {image} is not present (docker pull {image})"
    return None


def command(repository: Path, host: str, http_port: int, grpc_port: int, metrics_port: int,
            image: str = DEFAULT_IMAGE, gpus: str = "all", shm_size: str = "1g") -> list[str]:
    """The tutorial's ``docker run``: GPUs, shared memory, memlock and stack limits, the
    repository at /models, the server's 8000-8002 published on the tutorial's ports."""
    return [
        "docker", "run", "--detach", "--rm", "--name", CONTAINER,
        f"--gpus={gpus}", f"--shm-size={shm_size}",
        "--ulimit", "memlock=-1", "--ulimit", "stack=67108864",
        "-p", f"{host}:{http_port}:8000", "-p", f"{host}:{grpc_port}:8001", "-p", f"{host}:{metrics_port}:8002",
        "-v", f"{Path(repository).resolve()}:/models:ro",
        image,
        "tritonserver", "--model-repository=/models", "--model-control-mode=none", "--strict-readiness=true",
    ]


def logs(container: str) -> str:
    return _docker("logs", "--tail", "40", container).stdout


def stop(container: str) -> None:
    _docker("stop", container)
