"""The tutorial's client: ``Inference(url, model_name, model_version)`` with ``run``,
``async_run`` and ``get``, on gRPC (``tritonclient.grpc``), with threads.

    runner = Inference(url="127.0.0.1:7001", model_name="detection", model_version="1")
    results = runner.run(input={"raw_image": raw_image})            # {output name: numpy array}
    runner.async_run(input={"raw_image": raw_image}, input_id="image_0")
    input_id, results = runner.get(block=True)                      # in completion order
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from trt_client.core import Call, InferenceState, Pause, Results, Settings, Steps, T, Url, connect_steps
from trt_client.errors import RequestTimeout

if TYPE_CHECKING:
    from typing_extensions import Unpack


class Inference(InferenceState):
    """A connection to one model on a Triton server (or several replicas of it), for blocking
    and asynchronous requests.

    ``url``: ``"host:port"``, a list of ``"ip:port"`` replicas, or a gRPC target
    (``dns:///triton-headless:8001``, ``ipv4:10.0.0.1:8001,10.0.0.2:8001``); requests are spread
    over the replicas by gRPC's ``round_robin``. The keyword settings (``core.Settings``), with
    their defaults:

    - ``timeout=60.0``: each request's deadline in seconds (None: none).
    - ``max_in_flight=64``: asynchronous requests sent and not yet answered; at the bound
      ``async_run`` waits for a slot (``when_full="wait"``, up to ``timeout``) or raises
      ``TooManyInFlight`` (``when_full="raise"``).
    - ``connect_attempts=5``, ``retry_interval=1.0``: for a server that is still starting.
    - ``ssl=False``, ``root_certificates``, ``private_key``, ``certificate_chain`` (PEM files):
      tritonclient's TLS settings; ``headers``: sent with every call (restricted-API keys).
    - ``retry_unavailable=True``: send a request whose replica went away once more, to another
      replica (docs/client.md says why it is on).
    """

    def __init__(self, url: Url, model_name: str, model_version: str | int = "", **settings: Unpack[Settings]):
        super().__init__(url, model_name, model_version, **settings)
        self._client = grpcclient.InferenceServerClient(**self.options.client_arguments())
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._finished: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = 0
        try:
            self.spec = self._drive(connect_steps(self.options))
        except BaseException:
            self._client.close()
            raise

    def _drive(self, steps: Steps[T]) -> T:
        """Run the core's steps with blocking calls."""
        reply, failure = None, None
        while True:
            try:
                step = steps.throw(failure) if failure is not None else steps.send(reply)
            except StopIteration as done:
                return done.value
            reply, failure = None, None
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                continue
            try:
                reply = getattr(self._client, step.method)(**step.kwargs)
            except InferenceServerException as error:
                failure = error

    def _call(self, call: Call, input_id: Any = None) -> Any:
        try:
            return getattr(self._client, call.method)(**call.kwargs)
        except InferenceServerException as error:
            raise self.translated(error, input_id) from None

    # Metadata and health ---------------------------------------------------------------
    def server_live(self) -> bool:
        self.connected()
        return self._call(Call("is_server_live", self.options.per_call()))

    def server_ready(self) -> bool:
        self.connected()
        return self._call(Call("is_server_ready", self.options.per_call()))

    def model_ready(self) -> bool:
        self.connected()
        return self._call(Call("is_model_ready", self.options.model_kwargs()))

    # Inference ------------------------------------------------------------------------------
    def run(self, input: Mapping[str, Any]) -> Results:  # noqa: A002 - the tutorial's name
        """Send one request and wait for its outputs."""
        return self.outputs_of(self._call(self.infer_call(input)))

    def async_run(self, input: Mapping[str, Any], input_id: Any = None) -> Any:  # noqa: A002
        """Send one request without waiting; its outputs come back through ``get``.

        Returns the request's ``input_id`` (a counter when none is given). Raises
        ``InvalidInput`` at once for a request that does not match the model.
        """
        call = self.infer_call(input)
        input_id = self.ids.reserve(input_id)
        wait = self.options.when_full == "wait"
        if not self._slots.acquire(blocking=wait, timeout=self.timeout if wait else None):
            self.ids.release(input_id)
            raise self.ids.full_error(self.max_in_flight, self.options.when_full, self.timeout, input_id)
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)

        def finished(result, error):
            outcome = self.outcome(result, error, input_id)
            with self._lock:
                self._in_flight -= 1
            self._finished.put((input_id, outcome))
            self._slots.release()

        try:
            self._client.async_infer(callback=finished, **call.kwargs)
        except InferenceServerException as error:
            finished(None, error)
        return input_id

    def get(self, block: bool = True, timeout: float | None = None) -> tuple[Any, Results] | None:
        """The next finished asynchronous request, in completion order: ``(input_id, results)``.

        A request that failed raises its error here, with ``error.input_id`` naming it; the next
        ``get`` goes on with the other requests. ``block=False`` returns None when nothing has
        finished; ``block=True`` waits up to ``timeout`` seconds (forever when None) and raises
        ``RequestTimeout`` then. With nothing in flight, nothing finished and no timeout it
        raises ``TrtClientError`` at once instead of waiting forever.
        """
        if not self.ids.check_waitable(block, timeout):
            return None
        try:
            input_id, outcome = self._finished.get(block=block, timeout=timeout if block else None)
        except queue.Empty:
            if not block:
                return None
            raise RequestTimeout(f"no request finished within {timeout} s") from None
        return self.ids.deliver(input_id, outcome)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # Lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for the requests in flight (each bounded by ``timeout``), then close the connection.

        Results that finished stay available to ``get`` after ``close``.
        """
        if self.closed:
            return
        self.closed = True
        for _ in range(self.max_in_flight):
            self._slots.acquire()
        self._client.close()

    def __enter__(self) -> Inference:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
