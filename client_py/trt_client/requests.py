"""Bookkeeping of asynchronous requests, shared by the threaded and the asyncio clients:
which ``input_id``s are outstanding (sent, or finished and not yet collected by ``get``)."""
from __future__ import annotations

import itertools
import threading
from typing import Any

from trt_client.errors import InvalidInput, RequestTimeout, TooManyInFlight, TrtClientError


class RequestIds:
    def __init__(self):
        self._lock = threading.Lock()
        self._outstanding: set = set()
        self._counter = itertools.count()

    def reserve(self, input_id: Any = None) -> Any:
        """Claim an id for a new request (the next counter value when None); refuse one in use."""
        with self._lock:
            input_id = next(self._counter) if input_id is None else input_id
            if input_id in self._outstanding:
                raise InvalidInput(f"input_id {input_id!r} is already in use by a request not yet collected with get()",
                                   input_id)
            self._outstanding.add(input_id)
            return input_id

    def release(self, input_id: Any) -> None:
        with self._lock:
            self._outstanding.discard(input_id)

    def check_waitable(self, block: bool, timeout: float | None) -> bool:
        """Whether ``get`` should wait. With nothing outstanding, a get without a timeout would
        wait forever, so it raises; with a timeout it may wait for another thread's request."""
        with self._lock:
            if self._outstanding or (block and timeout is not None):
                return True
        if block:
            raise TrtClientError("get() with no request in flight and no timeout: call async_run first")
        return False

    def deliver(self, input_id: Any, outcome: Any) -> tuple[Any, Any]:
        """Hand a finished request to the caller: its results, or its error raised."""
        self.release(input_id)
        if isinstance(outcome, TrtClientError):
            raise outcome
        return input_id, outcome

    @staticmethod
    def full_error(bound: int, when_full: str, timeout: float | None, input_id: Any) -> TrtClientError:
        if when_full == "raise":
            return TooManyInFlight(f"{bound} requests are in flight; collect results with get()", input_id)
        return RequestTimeout(f"no slot among {bound} in-flight requests freed within {timeout} s", input_id)
