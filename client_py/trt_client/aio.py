"""The asyncio form of the client (on ``tritonclient.grpc.aio``), with the same options and semantics.

    async with aio.Inference("127.0.0.1:7001", "detection", "1") as runner:
        results = await runner.run(input={"raw_image": raw_image})
        await runner.async_run(input={"raw_image": raw_image}, input_id="image_0")
        input_id, results = await runner.get()
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from trt_client.core import Call, InferenceState, Pause, Results, Settings, Steps, T, Url, connect_steps
from trt_client.errors import RequestTimeout

if TYPE_CHECKING:
    from typing_extensions import Unpack


def _detached(error: BaseException) -> BaseException:
    """``error`` without its traceback and context: through them it holds the gRPC call, and the
    call holds the channel, which goes on reconnecting, even closed, while an error (or a reference
    cycle through one) is kept. The message keeps what they said."""
    error.__traceback__ = error.__context__ = error.__cause__ = None
    return error


class Inference(InferenceState):
    """See ``trt_client.client.Inference`` (same arguments); every call is a coroutine. Use
    ``async with`` or ``await Inference(...).connect()`` before the first request."""

    def __init__(self, url: Url, model_name: str, model_version: str | int = "", **settings: Unpack[Settings]):
        super().__init__(url, model_name, model_version, **settings)
        self._client: grpcaio.InferenceServerClient | None = None
        self._tasks: set[asyncio.Task] = set()

    async def connect(self) -> Inference:
        """Open the connection and read the model's description, retrying while the server starts."""
        if self.spec is not None or self.closed:
            self.connected()
            return self
        self._client = grpcaio.InferenceServerClient(**self.options.client_arguments())
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._finished: asyncio.Queue = asyncio.Queue()
        try:
            self.spec = await self._drive(connect_steps(self.options))
        except BaseException:
            await self._client.close()
            self._client = None
            raise
        return self

    async def _drive(self, steps: Steps[T]) -> T:
        """Run the core's steps with awaited calls."""
        reply, failure = None, None
        while True:
            try:
                step = steps.throw(failure) if failure is not None else steps.send(reply)
            except StopIteration as done:
                return done.value
            reply, failure = None, None
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
                continue
            try:
                reply = await getattr(self._client, step.method)(**step.kwargs)
            except InferenceServerException as error:
                failure = _detached(error)

    async def _call(self, call: Call, input_id: Any = None) -> Any:
        try:
            return await getattr(self._client, call.method)(**call.kwargs)
        except InferenceServerException as error:
            raise self.translated(_detached(error), input_id) from None

    async def server_live(self) -> bool:
        self.connected()
        return await self._call(Call("is_server_live", self.options.per_call()))

    async def server_ready(self) -> bool:
        self.connected()
        return await self._call(Call("is_server_ready", self.options.per_call()))

    async def model_ready(self) -> bool:
        self.connected()
        return await self._call(Call("is_model_ready", self.options.model_kwargs()))

    async def run(self, input: Mapping[str, Any]) -> Results:  # noqa: A002 - the tutorial's name
        return self.outputs_of(await self._call(self.infer_call(input)))

    async def async_run(self, input: Mapping[str, Any], input_id: Any = None) -> Any:  # noqa: A002
        """Send one request without waiting for it; returns its ``input_id``."""
        call = self.infer_call(input)
        input_id = self.ids.reserve(input_id)
        if self.options.when_full == "raise" and self._slots.locked():
            self.ids.release(input_id)
            raise self.ids.full_error(self.max_in_flight, self.options.when_full, self.timeout, input_id)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout)
        except asyncio.TimeoutError:
            self.ids.release(input_id)
            raise self.ids.full_error(self.max_in_flight, self.options.when_full, self.timeout, input_id) from None
        task = asyncio.create_task(self._request(call, input_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.peak_in_flight = max(self.peak_in_flight, len(self._tasks))
        return input_id

    async def _request(self, call: Call, input_id: Any) -> None:
        result, failure = None, None
        try:
            result = await getattr(self._client, call.method)(**call.kwargs)
        except Exception as error:  # noqa: BLE001 - delivered to get()
            failure = _detached(error)
        finally:
            self._slots.release()
        await self._finished.put((input_id, self.outcome(result, failure, input_id)))

    async def get(self, block: bool = True, timeout: float | None = None) -> tuple[Any, Results] | None:
        """As ``client.Inference.get``: ``(input_id, results)``, or the request's error raised."""
        if self.spec is None:
            self.connected()
        if not self.ids.check_waitable(block, timeout):
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
        return self.ids.deliver(input_id, outcome)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Wait for the requests in flight (each bounded by ``timeout``), then close the connection.
        Results that finished stay available to ``get``."""
        self.closed = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> Inference:
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()
