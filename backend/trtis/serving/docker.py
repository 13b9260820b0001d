"""The Docker form of the server: a Triton image on the GPUs, as the tutorial ran it.

The image must carry every backend the repository needs, and should carry the security fixes:
the native TensorFlow backend left the images after 25.02, which is older than the fixes of
CVE-2025-23319/23320/23334 (25.07) and of NVIDIA's bulletin 5828 (26.04). So a repository with a
TensorFlow graph gets 25.02, with a warning, and any other the patched image (``image_for``); a
repository that needs one of the project's own backends (``torch_compile``: the compiled network
and the GPU preprocess inside it) gets the project's image, built from the patched tag by
deploy/kubernetes/Dockerfile (``PROJECT_IMAGE``). The server runs under the project's supervisor
with the same API locks as the embedded server.
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from trtis.serving.server_config import ServerConfig

PATCHED_IMAGE = "nvcr.io/nvidia/tritonserver:26.04-py3"
TENSORFLOW_IMAGE = "nvcr.io/nvidia/tritonserver:25.02-py3"
# The image convert.sh's default repository (a TensorFlow preprocess graph) needs.
DEFAULT_IMAGE = TENSORFLOW_IMAGE
TENSORFLOW_PLATFORMS = {"tensorflow_graphdef", "tensorflow_savedmodel"}
# The backends the official -py3 images carry natively (tensorflow up to 25.02).
OFFICIAL_BACKENDS = {"onnxruntime", "pytorch", "tensorrt", "tensorflow", "python", "openvino", "fil", "dali"}
# The project's image (GPU variant), for a repository that needs the project's own backends.
def _version() -> str:
    """The project's version: its installed distribution's, or the package's own from a source tree."""
    try:
        return importlib.metadata.version("trtis")
    except importlib.metadata.PackageNotFoundError:
        from trtis import __version__

        return __version__


PROJECT_IMAGE = f"trtis-detection:{_version()}-gpu"
PROJECT_BUILD = ("docker build -f deploy/kubernetes/Dockerfile --build-arg VARIANT=gpu --build-arg TRITON_TAG=26.04 "
                 f"--build-arg MODEL_REPOSITORY=model_repository -t {PROJECT_IMAGE} .")
CONTAINER = "trtis-tritonserver"
PACKAGE = Path(__file__).resolve().parents[1]  # backend/trtis: the supervisor runs from it in the container
STATE_FILE = "/tmp/trtis-server.json"
STATE_DIR = "/tmp/trtis-state"  # the backends' own (the compiled network's inductor cache), as the image sets it
TLS_DIR = PurePosixPath("/run/trtis/tls")
READY_URL = "http://127.0.0.1:8000/v2/health/ready"
METRICS_URL = "http://127.0.0.1:8002/metrics"  # the supervisor sees hung models from its counters


def image_for(repository: Path) -> tuple[str, str | None]:
    """The image to run ``repository`` with, and a warning when it is not the patched one."""
    from trtis.repository import read_configs
    from trtis.runtimes import backend_of

    configs = read_configs(Path(repository))
    tensorflow = sorted(name for name, config in configs.items()
                        if config.platform in TENSORFLOW_PLATFORMS or config.backend == "tensorflow")
    if any(config.platform != "ensemble" and backend_of(config) not in OFFICIAL_BACKENDS for config in configs.values()):
        # The project's image is built from the patched tag, which has no TensorFlow backend.
        return PROJECT_IMAGE, (f"{', '.join(tensorflow)} need(s) the TensorFlow backend, which the project's image "
                               "(from 26.04) lacks: convert with --preprocess-format python or gpu" if tensorflow else None)
    if not tensorflow:
        return PATCHED_IMAGE, None
    return TENSORFLOW_IMAGE, (f"{', '.join(tensorflow)} need(s) the TensorFlow backend, last shipped in {TENSORFLOW_IMAGE}, "
                              "which lacks the Triton security fixes of 25.07 and 26.04 (docs/security.md); convert with "
                              "--preprocess-format python to serve from the patched image")


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
        if image == PROJECT_IMAGE:
            return f"the project's image {image} is not present: build it from the repository root ({PROJECT_BUILD})"
        return f"image {image} is not present (docker pull {image})"
    return None


def command(repository: Path, config: ServerConfig, *, shm_prefix: str, http_host: str | None = None,
            shm_size: str = "1g") -> list[str]:
    """The tutorial's ``docker run`` (GPUs, shared memory, memlock and stack limits, the repository
    at /models, 8000-8002 published on the tutorial's ports), with tritonserver under the supervisor.
    gRPC is published on ``config.host``, HTTP and metrics on ``http_host`` (the front door's
    loopback side); ``config.gpus`` is start.sh's ``--gpus`` (all, or a list such as 0,1)."""
    host, ports, security = config.host, config.chosen_ports, config.security
    gpus = config.gpus if config.gpus == "all" else f'"device={config.gpus}"'
    tls = security.grpc_tls
    inside = {} if tls is None else {Path(tls.cert): TLS_DIR / "server-cert.pem", Path(tls.key): TLS_DIR / "server-key.pem",
                                     **({Path(tls.client_ca): TLS_DIR / "client-ca.pem"} if tls.client_ca else {})}
    mounts = [f"{path.resolve()}:{target}:ro" for path, target in inside.items()]
    server = ["tritonserver", "--model-repository=/models", "--model-control-mode=none", "--strict-readiness=true",
              "--exit-on-error=true", f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
              *security.server_flags(path=lambda p: str(inside[Path(p)]))]
    return [
        "docker", "run", "--detach", "--rm", "--name", CONTAINER,
        f"--gpus={gpus}", f"--shm-size={shm_size}",
        "--ulimit", "memlock=-1", "--ulimit", "stack=67108864",
        "-p", f"{http_host or host}:{ports.http}:8000", "-p", f"{host}:{ports.grpc}:8001",
        "-p", f"{http_host or host}:{ports.metrics}:8002",
        "-v", f"{Path(repository).resolve()}:/models:ro",
        "-v", f"{PACKAGE}:/opt/trtis/trtis:ro", "-e", "PYTHONPATH=/opt/trtis", "-e", f"TRTIS_STATE_DIR={STATE_DIR}",
        *(part for mount in mounts for part in ("-v", mount)),
        config.image or DEFAULT_IMAGE,
        "python3", "-m", "trtis.serving.supervisor", "run", "--state-file", STATE_FILE, "--ready-url", READY_URL,
        "--shm-prefix", shm_prefix, "--metrics-url", METRICS_URL, "--", *server,
    ]


def probe(container: str) -> str | None:
    """The supervisor's health check, run inside the container: why it is unhealthy, or None."""
    result = _docker("exec", container, "python3", "-m", "trtis.serving.supervisor", "probe",
                     "--ready-url", READY_URL, "--state-file", STATE_FILE)
    return None if result.returncode == 0 else (result.stdout + result.stderr).strip()


def logs(container: str) -> str:
    """The container's whole log (Triton writes it to stderr): a failed start names each model that
    did not load from it."""
    result = _docker("logs", container)
    return result.stdout + result.stderr


def stop(container: str) -> None:
    _docker("stop", container)
