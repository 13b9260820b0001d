"""What the client tests share: an adapter that drives the threaded or the asyncio client the
same way (so one suite runs against both), a small echo model, real images that end in NUL
bytes, certificates made with openssl, tritonserver started with flags that ``serve`` does
not pass (TLS, restricted APIs), and killed as a crash would kill it."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from trtis import config, repository
from trtis.serving import Ports, ServerConfig, embedded
from trtis.serving.ports import free_port
from trtis.serving.server import wait_ready
from trtis.serving.state_folder import LaunchError
from trt_client import aio, client

HERE = Path(__file__).parent
KINDS = ["threads", "asyncio"]


class Driven:
    """An ``aio.Inference`` called like a ``client.Inference``: each coroutine it returns runs
    to completion on the adapter's event loop, so a test reads the same for both clients."""

    def __init__(self, inference: aio.Inference, loop: asyncio.AbstractEventLoop):
        self.inference, self.loop = inference, loop

    def __getattr__(self, name: str):
        value = getattr(self.inference, name)
        if inspect.iscoroutinefunction(value):
            return lambda *args, **kwargs: self.loop.run_until_complete(value(*args, **kwargs))
        return value

    def __enter__(self) -> Driven:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Clients:
    """Opens ``client.Inference`` (``kind="threads"``) or ``aio.Inference`` (``"asyncio"``) with
    the same arguments; ``finish`` closes what it opened."""

    def __init__(self, kind: str):
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "asyncio" else None
        self.opened: list = []

    def open(self, *args, **kwargs):
        if self.kind == "threads":
            runner = client.Inference(*args, **kwargs)
        else:
            runner = self.unconnected(*args, **kwargs)
            runner.connect()
        self.opened.append(runner)
        return runner

    def unconnected(self, *args, **kwargs) -> Driven:
        """The asyncio client before ``connect`` (the threaded one connects in its constructor)."""
        runner = Driven(aio.Inference(*args, **kwargs), self.loop)
        self.opened.append(runner)
        return runner

    def finish(self) -> None:
        for runner in self.opened:
            runner.close()
        if self.loop is not None:
            self.loop.close()


def one(value) -> dict:
    """One example of the tiny chain without a batch axis, as the tutorial passes it."""
    return {"text": np.array([str(value).encode()], dtype=bytes)}


def echo_model(name: str = "echo", delay_ms: int = 0, load_delay_ms: int = 0) -> repository.Model:
    """A Python model that answers each item of ``data`` with itself and its length, after
    ``delay_ms`` per request; it takes ``load_delay_ms`` more to load."""
    echo = config.model_config(name, backend="python", max_batch_size=8,
                               parameters={"delay_ms": delay_ms, "load_delay_ms": load_delay_ms},
                               inputs=[config.Tensor("data", "BYTES", [1])],
                               outputs=[config.Tensor("echo", "BYTES", [1]), config.Tensor("length", np.int64, [1])])
    return repository.Model(echo, (HERE / "echo" / "model.py").read_bytes())


CLASS_NAMES = ["cat", "dog", "bird"]


def detector_model(name: str, class_names: list[str] | None = None, label_file: bool = False) -> repository.Model:
    """A Python model shaped like the detection ensemble (``detector/model.py``), naming its classes
    in the ``class_names`` parameter, or only in a label file of its ``classes`` output."""
    parameters = {"class_names": json.dumps(class_names)} if class_names is not None else None
    detector = config.model_config(name, backend="python", max_batch_size=8, parameters=parameters,
                                   inputs=[config.Tensor("data", "BYTES", [1])],
                                   outputs=[config.Tensor("boxes", np.float32, [5, 4]),
                                            config.Tensor("scores", np.float32, [5]),
                                            config.Tensor("classes", np.int32, [5],
                                                          label_filename="labels.txt" if label_file else None)])
    files = {"labels.txt": "\n".join(CLASS_NAMES).encode() + b"\n"} if label_file else {}
    return repository.Model(detector, (HERE / "detector" / "model.py").read_bytes(), files=files)


def bmp() -> bytes:
    """A 3x2 BMP: rows are padded to 4 bytes, so the file ends in NULs."""
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 0] = (255, 0, 0)
    return cv2.imencode(".bmp", image)[1].tobytes()


def webp() -> bytes:
    """A WebP whose RIFF chunk of odd size is padded with a NUL, among the first seeds tried."""
    for seed in range(100):
        pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
        data = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes()
        if data.endswith(b"\0"):
            return data
    raise AssertionError("no WebP ending in NUL among 100 seeds")


@dataclass(frozen=True)
class RunningServer:
    grpc_url: str
    log: Path


@contextmanager
def tritonserver(repository_root: Path, extra_flags: list[str], state: Path) -> Iterator[RunningServer]:
    """The embedded tritonserver with ``extra_flags``, on free ports of 127.0.0.1."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    command = embedded.command(repository_root, ServerConfig(ports=Ports(http, grpc, metrics)))
    log = state / f"tritonserver-{grpc}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command + extra_flags, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=embedded.environment(), start_new_session=True)
    try:
        try:
            wait_ready("127.0.0.1", http, 120, still_running=lambda: process.poll() is None)
        except LaunchError as error:
            pytest.fail(f"{error}; the server's log:\n{log.read_text(errors='replace')[-3000:]}")
        yield RunningServer(f"127.0.0.1:{grpc}", log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _running(status: Path) -> bool:
    """Dead processes are gone, or zombies (until their parent reaps them); either way their sockets are closed."""
    try:
        return status.read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_tritonserver(grpc_port: int, group: bool = True) -> None:
    """SIGKILL the tritonserver listening on ``grpc_port``, as a crash or an OOM kill would: with its
    process group (its supervisor and backend processes, so nothing starts it again), or with
    ``group=False`` alone (its supervisor starts it again on the same ports)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if arguments[0].endswith(b"tritonserver") and f"--grpc-port={grpc_port}".encode() in arguments:
            pid = int(cmdline.parent.name)
            if group:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            status = cmdline.parent / "stat"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _running(status):
                time.sleep(0.01)
            return
    raise AssertionError(f"no tritonserver listens on gRPC port {grpc_port}")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate signed by the
    CA, and a stranger CA with its own client certificate (EC P-256, valid one day)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "stranger-ca"):
        _openssl("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "1", "-subj", f"/CN={ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=folder)
    leaves = {"server": ("ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
              "client": ("ca", "extendedKeyUsage=clientAuth\n"),
              "stranger": ("stranger-ca", "extendedKeyUsage=clientAuth\n")}
    for name, (ca, extensions) in leaves.items():
        (folder / f"{name}.ext").write_text(extensions)
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=folder)
    return {path.name: path for path in folder.glob("*.pem")} | {path.name: path for path in folder.glob("*.key")}
