"""On the GPU host: the project's image as a tree of files, serving a repository with the GPU
overlay's own container command, so the image's form can be measured where Docker cannot run.

``serve REPOSITORY`` lays out what deploy/kubernetes/Dockerfile builds (the ``trtis`` package at
IMAGE/opt/trtis; the python backend, with the project's backends copied beside it by the
Dockerfile's own ``python3 -m trtis.serving.backend_tree ... --copy --importable``, run from that
package) and starts the ``tritonserver`` container of the GPU overlay, as kubectl rendered it on
the CPU machine (tools/device/pack.sh: .device/gpu-overlay.yaml; the host has no kubectl). Only
what must differ here is substituted: ``python3`` is this venv's interpreter, ``tritonserver`` the
embedded binary, /models the repository, the backends and cache folders the laid-out ones, and the
admin key Secret a fresh key (IMAGE/admin.key, for bench.sh's --admin-key-file). The pod's ports
(gRPC 8001, HTTP and metrics 8000/8002 on loopback), its state file and shared-memory prefix stay
as written. It returns once the pod's readiness probe passes; the server runs on in its own
session until ``stop``.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from trtis.serving import embedded
from trtis.serving.security import new_key

ROOT = Path(__file__).resolve().parents[2]
RENDERED = ROOT / ".device" / "gpu-overlay.yaml"
IMAGE = Path("/tmp/trtis/image")


def container(rendered: Path) -> dict:
    """The tritonserver container of the rendered Deployment."""
    objects = [item for item in yaml.safe_load_all(rendered.read_text()) if item]
    deployment, = (o for o in objects if o["kind"] == "Deployment")
    triton, = (c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "tritonserver")
    return triton


def lay_out(image: Path) -> Path:
    """The Dockerfile's files under ``image``: the package, then the backends folder."""
    shutil.rmtree(image, ignore_errors=True)
    shutil.copytree(ROOT / "backend" / "trtis", image / "opt" / "trtis" / "trtis",
                    ignore=shutil.ignore_patterns("__pycache__"))
    backends = image / "opt" / "tritonserver" / "backends"
    shutil.copytree(embedded.DEFAULT_HOME / "backends" / "python", backends / "python")
    subprocess.run([sys.executable, "-m", "trtis.serving.backend_tree", str(backends), "--copy", "--importable"],
                   env={**os.environ, "PYTHONPATH": str(image / "opt" / "trtis")}, check=True)
    return backends


def expanded(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' ``$(VAR)`` expansion of ``args`` from the container's env."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg) for arg in args]


def serve(repository: Path, image: Path, timeout: float) -> None:
    triton = container(RENDERED)
    backends = lay_out(image)
    key = new_key()
    (image / "admin.key").write_text(key + "\n")
    pod_env = {item["name"]: item.get("value", key) for item in triton.get("env", [])}  # the one Secret: the key
    args = expanded(triton["args"], pod_env)
    split = args.index("--")
    supervisor, server = args[:split + 1], args[split + 1:]
    assert supervisor[0] == "python3" and server[0] == "tritonserver", (supervisor[0], server[0])
    server = [str(embedded.binary()),
              *(f"--model-repository={repository.resolve()}" if arg == "--model-repository=/models" else arg
                for arg in server[1:]),
              f"--backend-directory={backends}", f"--cache-directory={embedded.binary().parent.parent / 'caches'}"]
    command = [sys.executable, *supervisor[1:], *server]
    env = {**embedded.environment(), **pod_env, "PYTHONPATH": str(image / "opt" / "trtis"),
           "TRTIS_STATE_DIR": "/tmp/trtis-state"}  # the Dockerfile's ENV
    print("image_tree.py:", " ".join(command).replace(key, "<admin.key>"))
    with open(image / "tritonserver.log", "wb") as log:
        supervisor_process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
    (image / "supervisor.pid").write_text(f"{supervisor_process.pid}\n")
    probe = [sys.executable, *triton["readinessProbe"]["exec"]["command"][1:]]
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if supervisor_process.poll() is not None:
            sys.exit(f"image_tree.py: the supervisor exited ({supervisor_process.returncode}); the log:\n"
                     + (image / "tritonserver.log").read_text(errors="replace")[-4000:])
        if subprocess.run(probe, env=env, capture_output=True, timeout=30).returncode == 0:
            imported = subprocess.run([sys.executable, "-c", "import trtis; print(trtis.__file__)"], env=env,
                                      capture_output=True, text=True).stdout.strip()
            print(f"image_tree.py: the pod's probe passed {time.monotonic() - began:.0f} s after the start "
                  f"(trtis from {imported})")
            return
        time.sleep(2)
    sys.exit(f"image_tree.py: the probe did not pass in {timeout:.0f} s; the log:\n"
             + (image / "tritonserver.log").read_text(errors="replace")[-4000:])


def stop(image: Path) -> None:
    """SIGTERM to the supervisor (it stops tritonserver within its --stop-timeout), then wait."""
    pid = int((image / "supervisor.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(120):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("image_tree.py: stopped")
            return
        time.sleep(0.5)
    sys.exit(f"image_tree.py: the supervisor ({pid}) did not stop in 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["serve", "stop"])
    parser.add_argument("repository", type=Path, nargs="?", default=ROOT / "model_repository")
    parser.add_argument("--image", type=Path, default=IMAGE, help="where the image's files are laid out")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the probe")
    args = parser.parse_args()
    serve(args.repository, args.image, args.timeout) if args.action == "serve" else stop(args.image)


if __name__ == "__main__":
    main()
