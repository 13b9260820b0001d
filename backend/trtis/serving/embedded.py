"""The embedded Triton server: the `tritonserver` binary that nvidia-pytriton bundles.

That binary carries only the Python backend. Triton serves a model whose config names platform
``onnxruntime_onnx`` with the backend ``onnxruntime``, found as ``<backends>/onnxruntime/``;
where that folder holds a ``model.py`` instead of a shared library, the Python backend runs it
("Python-based backend"). So the server folder assembled here holds the bundled ``python``
backend (with the stub for this interpreter) and links to the project's backends, laid out by
``trtis.serving.backend_tree`` as the project's image lays them out.

Run as ``python -m trtis.serving.embedded`` (install.sh does) to assemble and check it.
"""
from __future__ import annotations

import filecmp
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from trtis.serving import backend_tree
from trtis.serving.server_config import ServerConfig

log = logging.getLogger(__name__)

DEFAULT_HOME = Path(sys.prefix) / "tritonserver"


class EmbeddedServerError(RuntimeError):
    """The embedded server cannot run on this machine as set up."""


def _pytriton() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("nvidia-pytriton is not installed in this environment: run ./install.sh")
    return Path(spec.submodule_search_locations[0])


def binary() -> Path:
    return _pytriton() / "tritonserver" / "bin" / "tritonserver"


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def environment() -> dict[str, str]:
    """The server's environment: this venv first on PATH (the stub finds its packages through
    it; PYTHONPATH alone is not enough), and the bundled libraries on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    paths = [str(_pytriton().parent / "nvidia_pytriton.libs")]
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (Path(libdir) / f"libpython{_python_version()}.so.1.0").exists():
        paths.append(libdir)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(paths + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def missing_libraries(executable: Path) -> list[str]:
    """Shared libraries ``executable`` needs that the loader cannot find."""
    result = subprocess.run(["ldd", str(executable)], capture_output=True, text=True, env=environment())
    return [line.split()[0] for line in result.stdout.splitlines() if "not found" in line]


def assemble(home: Path = DEFAULT_HOME) -> Path:
    """Build ``home/backends``: the bundled python backend with this Python's stub, and links
    to the project's Python-based backends. Safe to re-run."""
    bundled = _pytriton() / "tritonserver"
    stub = bundled / "python_backend_stubs" / _python_version() / "triton_python_backend_stub"
    if not stub.exists():
        raise EmbeddedServerError(f"nvidia-pytriton has no Python backend stub for Python {_python_version()} "
                                  f"({stub}); use Python 3.8-3.13")
    backends = Path(home) / "backends"
    python_backend = backends / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    for item in [*(bundled / "backends" / "python").iterdir(), stub]:
        target = python_backend / item.name
        # A running server holds these files open ("text file busy"): copy only what changed.
        if item.is_file() and not (target.exists() and filecmp.cmp(item, target, shallow=False)):
            shutil.copy2(item, target)
    backend_tree.lay_out(backends)  # the project's backends, as the image's Dockerfile lays them out
    missing = missing_libraries(python_backend / stub.name)
    if missing:
        raise EmbeddedServerError(
            f"the Python backend stub needs {', '.join(missing)}; install it "
            f"(on Debian/Ubuntu: apt-get install libpython{_python_version()}) and run ./install.sh again")
    log.info("Assembled the embedded Triton server backends in %s (%s)", backends,
             ", ".join(sorted(p.name for p in backends.iterdir())))
    return Path(home)


def command(repository: Path, config: ServerConfig, *, shm_prefix: str | None = None, http_host: str | None = None,
            home: Path = DEFAULT_HOME) -> list[str]:
    """The server's command line; model control mode none: clients cannot load or unload.

    gRPC listens on ``config.host``, HTTP and metrics on ``http_host`` (default the same: behind the
    front door they listen on loopback only). ``shm_prefix`` names the Python backend's shared-memory
    regions, so that the regions and stub processes of this server can be told from any other's;
    ``config.security`` adds its API locks and TLS."""
    ports, security = config.chosen_ports, config.security
    backends = Path(home) / "backends"
    if not (backends / "python" / "triton_python_backend_stub").exists():
        raise EmbeddedServerError(f"no embedded server assembled in {home}: run ./install.sh")
    return [
        str(binary()),
        f"--model-repository={Path(repository).resolve()}",
        f"--backend-directory={backends}",
        f"--cache-directory={binary().parent.parent / 'caches'}",
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--exit-timeout-secs=15",
        f"--http-address={http_host or config.host}", f"--http-port={ports.http}",
        f"--grpc-address={config.host}", f"--grpc-port={ports.grpc}",
        f"--metrics-address={http_host or config.host}", f"--metrics-port={ports.metrics}",
        f"--log-verbose={config.log_verbose}",
        *([f"--backend-config=python,shm-region-prefix-name={shm_prefix}"] if shm_prefix else []),
        *[f"--cuda-memory-pool-byte-size={gpu}:{CUDA_MEMORY_POOL_BYTES}" for gpu in range(gpu_count())],
        *security.server_flags(),
    ]


# Triton moves GPU tensors between the models of an ensemble through a CUDA memory pool per GPU, whose
# default is smaller than one large batch of images; what the pool cannot hold goes through host
# memory instead (docs/performance/gpu.md).
CUDA_MEMORY_POOL_BYTES = 1 << 30


def gpu_count() -> int:
    """The NVIDIA GPUs this machine shows (0 without a driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        home = assemble()
    except EmbeddedServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Embedded Triton server ready to start: {binary()} with backends in {home / 'backends'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
