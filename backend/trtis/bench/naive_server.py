"""The naive baseline server: what a user might write without Triton (Flask and the same runtimes,
one request at a time), in a process of its own.

``NaiveServer`` starts ``python -m trtis.bench.naive_server`` and hands it the repository, the model
and the overrides pickled on stdin. A fresh interpreter, not ``multiprocessing``: its spawn start
method re-runs the user's script in the child, which then starts everything again unless the script
has an ``if __name__ == "__main__":`` guard. So the overrides must be importable (functions of a
module, not of the script being run). The child answers on stdout with one JSON line, its port or
why it could not start; its own later output goes to stderr.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from trtis.bench.in_process import InProcessModel, StepFunction
from trtis.bench.inputs import Request
from trtis.config import ModelConfig


def raw_input(config: ModelConfig) -> bool:
    """Whether the naive server takes the request body as the model's one BYTES input, as a user
    would post a file; otherwise the body is an ``.npz`` of numeric inputs."""
    strings = [t for t in config.input if t.data_type == pb.TYPE_STRING]
    if strings and len(config.input) > 1:
        raise ValueError(f"the naive server takes one BYTES input or numeric inputs; {config.name!r} has "
                         f"{[t.name for t in config.input]}: run without the naive baseline")
    return bool(strings)


def encode_body(request: Request, raw: bool) -> bytes:
    if raw:
        (array,) = request.values()
        return bytes(array.reshape(-1)[0])
    buffer = io.BytesIO()
    np.savez(buffer, **request)
    return buffer.getvalue()


def _app(runner: InProcessModel, config: ModelConfig):
    from flask import Flask, Response, request

    raw = raw_input(config)
    shape = (1,) * (len(config.input[0].dims) + (config.max_batch_size > 0)) if raw else ()
    app = Flask("naive")

    @app.post("/infer")
    def infer():
        body = request.get_data()
        if raw:
            feed = {config.input[0].name: np.array([body], dtype=np.object_).reshape(shape)}
        else:
            with np.load(io.BytesIO(body), allow_pickle=False) as arrays:
                feed = dict(arrays)
        outputs = runner(feed)
        text = json.dumps({name: value.tolist() for name, value in outputs.items()},
                          default=lambda item: item.decode("utf-8", "replace"))
        return Response(text, mimetype="application/json")

    return app


def main() -> None:
    """The child: read the job from stdin, answer the port (or the error) on stdout, serve."""
    import logging

    from werkzeug.serving import make_server

    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the runtimes print goes to stderr, never into the answer pipe
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    try:
        root, model, overrides, port = pickle.load(sys.stdin.buffer)
        runner = InProcessModel(root, model, overrides)
        server = make_server("127.0.0.1", port, _app(runner, runner.configs[model]), threaded=False)  # no banner
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
        answer.write(json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n")
        answer.close()
        return
    answer.write(json.dumps({"port": server.port}) + "\n")
    answer.close()
    server.serve_forever()


def _job(root: str, model: str, overrides: Mapping[str, StepFunction], port: int) -> bytes:
    """What the child is to serve, pickled; the overrides must be functions it can import."""
    scripted = [name for name, function in overrides.items() if getattr(function, "__module__", None) == "__main__"]
    if scripted:
        raise ValueError(f"the overrides of {scripted} are defined in the script being run: the naive server "
                         "loads them in a process of its own, so define them in a module it can import")
    try:
        return pickle.dumps((root, model, dict(overrides), port))
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ValueError(f"the overrides cannot be handed to the naive server's process ({error}): pass "
                         "functions defined at the top level of an importable module") from error


class NaiveServer:
    """The naive server in a process of its own, for a ``with`` block; ``port=0`` takes a free one."""

    def __init__(self, root: Path | str, model: str, overrides: Mapping[str, StepFunction] | None = None,
                 port: int = 0, timeout: float = 300):
        self.root, self.model, self.overrides, self.port, self.timeout = str(root), model, dict(overrides or {}), port, timeout

    def __enter__(self) -> NaiveServer:
        job = _job(self.root, self.model, self.overrides, self.port)
        # The child imports what this process can: the same module path.
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen([sys.executable, "-m", "trtis.bench.naive_server"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=environment)
        try:
            self.port = self._started(job)
        except BaseException:  # the child must not keep the port or the pipe
            self.__exit__()
            raise
        return self

    def _started(self, job: bytes) -> int:
        """Hand the child its job; the port it listens on once it says so."""
        self.process.stdin.write(job)
        self.process.stdin.close()
        deadline = time.monotonic() + self.timeout
        while not select.select([self.process.stdout], [], [], 0.5)[0]:
            if self.process.poll() is not None:
                raise RuntimeError(f"the naive server exited while starting (exit code {self.process.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the naive server did not start within {self.timeout:.0f} s")
        line = self.process.stdout.readline()
        answer = json.loads(line) if line.strip() else {"error": f"it exited (code {self.process.wait()})"}
        if "error" in answer:
            raise RuntimeError(f"the naive server could not start: {answer['error']}")
        return answer["port"]

    def __exit__(self, *exc) -> None:
        if not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


if __name__ == "__main__":
    main()
