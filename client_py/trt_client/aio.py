"""The asyncio form of the client (on ``tritonclient.grpc.aio``), with the same semantics.

    async with aio.Inference("127.0.0.1:7001", "detection", "1") as runner:
        results = await runner.run(input={"raw_image": raw_image})
        await runner.async_run(input={"raw_image": raw_image}, input_id="image_0")
        input_id, results = await runner.get()
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from trt_client.errors import ModelNotReady, RequestTimeout, ServerUnreachable, TrtClientError, translate
from trt_client.requests import RequestIds
from trt_client.tensors import ModelSpec, TensorInfo, prepare, results

Results = dict[str, np.ndarray]


class Inference:
    """See ``trt_client.client.Inference``; every call is a coroutine. Use ``async with`` or
    ``await Inference(...).connect()`` before the first request."""

    def __init__(self, url: str, model_name: str, model_version: str = "", *, timeout: float | None = 60.0,
                 max_in_flight: int = 64, when_full: Literal["wait", "raise"] = "wait",
                 connect_attempts: int = 5, retry_interval: float = 1.0):
        if max_in_flight < 1 or when_full not in ("wait", "raise"):
            raise ValueError("max_in_flight must be at least 1 and when_full 'wait' or 'raise'")
        self.url, self.model_name, self.model_version = url, model_name, str(model_version or "")
        self.timeout, self.max_in_flight, self.when_full = timeout, max_in_flight, when_full
        self.connect_attempts, self.retry_interval = connect_attempts, retry_interval
        self._client: grpcaio.InferenceServerClient | None = None
        self._ids = RequestIds()
        self._tasks: set[asyncio.Task] = set()
        self.spec: ModelSpec | None = None
        self.peak_in_flight = 0

    async def connect(self) -> Inference:
        """Open the connection and read the model's description, retrying while the server starts."""
        if self.spec is not None:
            return self
        self._client = grpcaio.InferenceServerClient(self.url)
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._finished: asyncio.Queue = asyncio.Queue()
        for attempt in range(self.connect_attempts):
            try:
                self.spec = await self._read_spec()
                return self
            except InferenceServerException as error:
                if "UNAVAILABLE" not in str(error.status() or "") or attempt == self.connect_attempts - 1:
                    await self._client.close()
                    raise translate(error, self.url, self.model_name) from None
                await asyncio.sleep(self.retry_interval)
            except TrtClientError:
                await self._client.close()
                raise
        raise AssertionError("unreachable")

    async def _read_spec(self) -> ModelSpec:
        client = self._client
        if not await client.is_server_live(client_timeout=self.timeout):
            raise ServerUnreachable(f"the Triton server at {self.url} is not live")
        if not await client.is_model_ready(self.model_name, self.model_version, client_timeout=self.timeout):
            index = await client.get_model_repository_index(as_json=True)
            models = [m["name"] for m in index.get("models", [])]
            version = f" version {self.model_version}" if self.model_version else ""
            raise ModelNotReady(f"model {self.model_name!r}{version} is not ready at {self.url}; "
                                f"the server has: {', '.join(models) or 'no models'}")
        metadata = await client.get_model_metadata(self.model_name, self.model_version, as_json=True)
        config = await client.get_model_config(self.model_name, self.model_version, as_json=True)
        return ModelSpec.from_server(metadata, config["config"])

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self._connected().inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self._connected().outputs

    def _connected(self) -> ModelSpec:
        if self.spec is None:
            raise TrtClientError("not connected: use 'async with' or await connect() first")
        return self.spec

    async def _ask(self, call, input_id: Any = None):
        try:
            return await call
        except InferenceServerException as error:
            raise translate(error, self.url, self.model_name, input_id) from None

    async def server_live(self) -> bool:
        return await self._ask(self._client.is_server_live(client_timeout=self.timeout))

    async def server_ready(self) -> bool:
        return await self._ask(self._client.is_server_ready(client_timeout=self.timeout))

    async def model_ready(self) -> bool:
        return await self._ask(self._client.is_model_ready(self.model_name, self.model_version,
                                                           client_timeout=self.timeout))

    async def run(self, input: Mapping[str, Any]) -> Results:  # noqa: A002 - the tutorial's name
        spec = self._connected()
        tensors = prepare(spec, input)
        result = await self._ask(self._client.infer(self.model_name, tensors, self.model_version,
                                                    client_timeout=self.timeout))
        return results(spec, result)

    async def async_run(self, input: Mapping[str, Any], input_id: Any = None) -> Any:  # noqa: A002
        """Send one request without waiting for it; returns its ``input_id``."""
        spec = self._connected()
        tensors = prepare(spec, input)
        input_id = self._ids.reserve(input_id)
        if self.when_full == "raise" and self._slots.locked():
            self._ids.release(input_id)
            raise self._ids.full_error(self.max_in_flight, self.when_full, self.timeout, input_id)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout)
        except asyncio.TimeoutError:
            self._ids.release(input_id)
            raise self._ids.full_error(self.max_in_flight, self.when_full, self.timeout, input_id) from None
        task = asyncio.create_task(self._request(spec, tensors, input_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.peak_in_flight = max(self.peak_in_flight, len(self._tasks))
        return input_id

    async def _request(self, spec: ModelSpec, tensors: list, input_id: Any) -> None:
        try:
            outcome = results(spec, await self._ask(self._client.infer(
                self.model_name, tensors, self.model_version, client_timeout=self.timeout), input_id))
        except TrtClientError as error:
            outcome = error
        except Exception as error:  # noqa: BLE001 - delivered to get()
            outcome = TrtClientError(f"request failed: {error}", input_id)
        finally:
            self._slots.release()
        await self._finished.put((input_id, outcome))

    async def get(self, block: bool = True, timeout: float | None = None) -> tuple[Any, Results] | None:
        """As ``client.Inference.get``: ``(input_id, results)``, or the request's error raised."""
        self._connected()
        if not self._ids.check_waitable(block, timeout):
            return None
        try:
            if not block:
                input_id, outcome = self._finished.get_nowait()
            else:
                input_id, outcome = await asyncio.wait_for(self._finished.get(), timeout)
        except asyncio.QueueEmpty:
            return None
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no request finished within {timeout} s") from None
        return self._ids.deliver(input_id, outcome)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Wait for the requests in flight (each bounded by ``timeout``), then close the connection."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> Inference:
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()
