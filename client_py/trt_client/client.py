"""The tutorial's client: ``Inference(url, model_name, model_version)`` with ``run``,
``async_run`` and ``get``, on gRPC (``tritonclient.grpc``).

    runner = Inference(url="127.0.0.1:7001", model_name="detection", model_version="1")
    results = runner.run(input={"raw_image": raw_image})            # {output name: numpy array}
    runner.async_run(input={"raw_image": raw_image}, input_id="image_0")
    input_id, results = runner.get(block=True)                      # in completion order
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from trt_client.errors import ModelNotReady, RequestTimeout, ServerUnreachable, TrtClientError, translate
from trt_client.requests import RequestIds
from trt_client.tensors import ModelSpec, TensorInfo, prepare, results

T = TypeVar("T")
Results = dict[str, np.ndarray]


def connect_with_retries(call: Callable[[], T], url: str, attempts: int, interval: float) -> T:
    """Run ``call`` until the server answers, for a server that is still starting."""
    for attempt in range(attempts):
        try:
            return call()
        except InferenceServerException as error:
            if "UNAVAILABLE" not in str(error.status() or "") or attempt == attempts - 1:
                raise
            time.sleep(interval)
    raise AssertionError("unreachable")


class Inference:
    """A connection to one model on a Triton server, for blocking and asynchronous requests.

    ``max_in_flight`` bounds the asynchronous requests sent and not yet answered; when it is
    reached, ``async_run`` waits for a slot (``when_full="wait"``, bounded by ``timeout``) or
    raises ``TooManyInFlight`` (``when_full="raise"``). ``timeout`` is each request's deadline in
    seconds. ``connect_attempts`` and ``retry_interval`` cover a server that is still starting.
    """

    def __init__(self, url: str, model_name: str, model_version: str = "", *, timeout: float | None = 60.0,
                 max_in_flight: int = 64, when_full: Literal["wait", "raise"] = "wait",
                 connect_attempts: int = 5, retry_interval: float = 1.0):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if when_full not in ("wait", "raise"):
            raise ValueError("when_full must be 'wait' or 'raise'")
        self.url, self.model_name, self.model_version = url, model_name, str(model_version or "")
        self.timeout, self.when_full = timeout, when_full
        self.max_in_flight = max_in_flight
        self._client = grpcclient.InferenceServerClient(url)
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._finished: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._ids = RequestIds()
        self._in_flight = 0
        self.peak_in_flight = 0
        self._closed = False
        try:
            self.spec = connect_with_retries(self._read_spec, url, connect_attempts, retry_interval)
        except InferenceServerException as error:
            self._client.close()
            raise translate(error, url, model_name) from None
        except TrtClientError:
            self._client.close()
            raise

    def _read_spec(self) -> ModelSpec:
        if not self._client.is_server_live(client_timeout=self.timeout):
            raise ServerUnreachable(f"the Triton server at {self.url} is not live")
        if not self._client.is_model_ready(self.model_name, self.model_version, client_timeout=self.timeout):
            models = [m["name"] for m in self._client.get_model_repository_index(as_json=True).get("models", [])]
            version = f" version {self.model_version}" if self.model_version else ""
            raise ModelNotReady(f"model {self.model_name!r}{version} is not ready at {self.url}; "
                                f"the server has: {', '.join(models) or 'no models'}")
        metadata = self._client.get_model_metadata(self.model_name, self.model_version, as_json=True)
        config = self._client.get_model_config(self.model_name, self.model_version, as_json=True)["config"]
        return ModelSpec.from_server(metadata, config)

    # Metadata and health ---------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.spec.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.spec.outputs

    def _ask(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except InferenceServerException as error:
            raise translate(error, self.url, self.model_name) from None

    def server_live(self) -> bool:
        return self._ask(lambda: self._client.is_server_live(client_timeout=self.timeout))

    def server_ready(self) -> bool:
        return self._ask(lambda: self._client.is_server_ready(client_timeout=self.timeout))

    def model_ready(self) -> bool:
        return self._ask(lambda: self._client.is_model_ready(self.model_name, self.model_version,
                                                             client_timeout=self.timeout))

    # Inference ------------------------------------------------------------------------------
    def run(self, input: Mapping[str, Any]) -> Results:  # noqa: A002 - the tutorial's name
        """Send one request and wait for its outputs."""
        self._check_open()
        tensors = prepare(self.spec, input)
        result = self._ask(lambda: self._client.infer(self.model_name, tensors, self.model_version,
                                                      client_timeout=self.timeout))
        return results(self.spec, result)

    def async_run(self, input: Mapping[str, Any], input_id: Any = None) -> Any:  # noqa: A002
        """Send one request without waiting; its outputs come back through ``get``.

        Returns the request's ``input_id`` (a counter when none is given). Raises
        ``InvalidInput`` at once for a request that does not match the model.
        """
        self._check_open()
        tensors = prepare(self.spec, input)
        input_id = self._ids.reserve(input_id)
        if not self._slots.acquire(blocking=self.when_full == "wait",
                                   timeout=self.timeout if self.when_full == "wait" else None):
            self._ids.release(input_id)
            raise self._ids.full_error(self.max_in_flight, self.when_full, self.timeout, input_id)
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)

        def finished(result, error):
            if error is not None:
                outcome = translate(error, self.url, self.model_name, input_id)
            else:
                try:
                    outcome = results(self.spec, result)
                except Exception as problem:  # noqa: BLE001 - delivered to get()
                    outcome = TrtClientError(f"could not read the outputs: {problem}", input_id)
            with self._lock:
                self._in_flight -= 1
            self._finished.put((input_id, outcome))
            self._slots.release()

        try:
            self._client.async_infer(self.model_name, tensors, finished, self.model_version,
                                     client_timeout=self.timeout)
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
        if not self._ids.check_waitable(block, timeout):
            return None
        try:
            input_id, outcome = self._finished.get(block=block, timeout=timeout if block else None)
        except queue.Empty:
            if not block:
                return None
            raise RequestTimeout(f"no request finished within {timeout} s") from None
        return self._ids.deliver(input_id, outcome)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # Lifetime ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise TrtClientError("this Inference is closed")

    def close(self) -> None:
        """Wait for the requests in flight (each bounded by ``timeout``), then close the connection.

        Results that finished stay available to ``get`` after ``close``.
        """
        if self._closed:
            return
        self._closed = True
        for _ in range(self.max_in_flight):
            self._slots.acquire()
        self._client.close()

    def __enter__(self) -> Inference:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
