"""The pod's Triton container run here: the rendered container command (the supervisor running
tritonserver), its environment and its probe command, with the bundled tritonserver binary.

Only what must differ on this machine is substituted: ``python3`` is this interpreter; the
tritonserver program is the bundled binary, with its repository and cache folders and free local
ports (gRPC on loopback); the state file is a temporary one; the shared-memory prefix a fresh one,
in both places the pod names it. The image's files are laid out as its Dockerfile lays them out:
the package (rendered_manifests.image_package) is the PYTHONPATH of the supervisor, the server and
the probe, and the backends folder is the bundled python backend (standing in for the image's own)
with the project's backends copied beside it by the image's ``python3 -m trtis.serving.backend_tree
... --copy --importable``, run from that package. Where the image has native backends this machine has none, so
the project's Python-based ones of the same names serve those platforms here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rendered_manifests import (container_env, expanded_args, flags, image_package, render, supervised,
                                triton_container, with_port)
from servers import wait_until
from trtis.serving import Ports, ServerConfig, embedded, process, state_folder
from trtis.serving.health import read_state
from trtis.serving.ports import free_port
from trtis.serving.server import wait_ready

# What differs on this machine: where the repository and the backends are, and free local ports.
# (--http-address and --metrics-address stay the pod's: loopback.)
HOST_FLAGS = ("--model-repository", "--backend-directory", "--cache-directory", "--http-port",
              "--grpc-address", "--grpc-port", "--metrics-port")


@dataclass
class Pod:
    ports: Ports
    state_dir: Path
    shm_prefix: str
    probe_command: list[str]
    probe_env: dict[str, str]
    supervisor: subprocess.Popen
    log: Path

    def probe(self) -> tuple[bool, str]:
        """The pod's probe command, run as the kubelet runs it in the container: passed, and what it said."""
        run = subprocess.run(self.probe_command, env=self.probe_env, capture_output=True, text=True, timeout=30)
        return run.returncode == 0, (run.stdout + run.stderr).strip()

    def state(self) -> dict:
        return read_state(self.state_dir / state_folder.STATE_FILE) or {}

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def localized(args: list[str], pod_prefix: str, shm_prefix: str) -> list[str]:
    """``args`` with the pod's shared-memory prefix replaced wherever it occurs: the supervisor's
    --shm-prefix and tritonserver's --backend-config, nowhere else."""
    assert sum(pod_prefix in arg for arg in args) == 2, "the prefix is named in exactly two places"
    return [arg.replace(pod_prefix, shm_prefix) for arg in args]


def image_backends(backends: Path, package: Path) -> Path:
    """The image's backends folder: a python backend (the bundled one here), then the Dockerfile's
    ``python3 -m trtis.serving.backend_tree /opt/tritonserver/backends --copy --importable``, run from
    the image's package (here every runtime's packages but TensorRT's import)."""
    if not (backends / "python").exists():
        shutil.copytree(embedded.DEFAULT_HOME / "backends" / "python", backends / "python")
    laid = subprocess.run([sys.executable, "-m", "trtis.serving.backend_tree", str(backends), "--copy", "--importable"],
                          env={**os.environ, "PYTHONPATH": str(package)}, capture_output=True, text=True, timeout=60)
    assert laid.returncode == 0, laid.stderr
    return backends


@contextlib.contextmanager
def run_pod(repository: Path, state_dir: Path, image_dir: Path, secrets: dict[tuple[str, str], str],
            overlay: str = "cpu", timeout: float = 300) -> Iterator[Pod]:
    """The overlay's Triton container on ``repository`` until the ``with`` block ends; it is entered
    once the pod's probe passes."""
    container = triton_container(render(overlay))
    ports = Ports(free_port(), free_port(), free_port())
    supervisor, server = supervised(expanded_args(container, secrets))
    prefix = process.new_shm_prefix()
    local = embedded.command(repository, ServerConfig(ports=ports))
    host = {name: value for name, value in flags(["tritonserver", *local[1:]]).items() if name in HOST_FLAGS}
    package = image_package(image_dir)
    host["--backend-directory"] = str(image_backends(image_dir / "opt" / "tritonserver" / "backends", package))
    options = {**supervisor, "--state-file": str(state_dir / state_folder.STATE_FILE),
               "--ready-url": with_port(supervisor["--ready-url"], ports.http),
               "--metrics-url": with_port(supervisor["--metrics-url"], ports.metrics)}
    command = localized([sys.executable, "-m", "trtis.serving.supervisor", "run",
                         *(part for pair in options.items() for part in pair), "--",
                         local[0], *(f"{n}={v}" for n, v in {**flags(server), **host}.items())],
                        supervisor["--shm-prefix"], prefix)
    env = {**embedded.environment(), **container_env(container, secrets), "PYTHONPATH": str(package)}
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[0] == "python3"
    probe_command = [sys.executable, *probe[1:]]
    probe_command[probe_command.index(supervisor["--ready-url"])] = options["--ready-url"]
    probe_command[probe_command.index(supervisor["--state-file"])] = options["--state-file"]
    probe_env = {**os.environ, **container_env(container, secrets), "PYTHONPATH": str(package)}
    log = state_dir / state_folder.LOG_FILE
    with open(log, "wb") as out:
        keeper = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                  start_new_session=True)
    pod = Pod(ports, state_dir, prefix, probe_command, probe_env, keeper, log)
    try:
        started = time.monotonic()
        # Triton's readiness first (cheap), then the probe command, which also needs the supervisor's word.
        wait_ready("127.0.0.1", ports.http, timeout, still_running=lambda: keeper.poll() is None)
        if wait_until(lambda: pod.probe()[0], 30, step=0.5, still=lambda: keeper.poll() is None) is None:
            raise state_folder.LaunchError(f"the pod's probe did not pass: {pod.probe()[1]}")
        print(f"\npod ({repository.name}): the probe passed {time.monotonic() - started:.1f} s after the start")
    except state_folder.LaunchError as error:
        state_folder.stop(state_dir)
        if keeper.poll() is None:
            keeper.kill()
        keeper.wait()
        raise AssertionError(f"{error}; the log:\n{pod.log_tail()}") from error
    try:
        yield pod
    finally:
        state_folder.stop(state_dir)
        if keeper.poll() is None:
            keeper.kill()
        keeper.wait()
