"""What the threaded and the asyncio clients share, with no I/O of its own.

The options and their checks, the gRPC channel they make (TLS, headers, balancing over
replicas, one retry of a request whose replica went away), the connect sequence as steps that
each client runs with its own I/O (``connect_steps``), and the state of one ``Inference``
(connected, closed, requests outstanding). ``client.py`` and ``aio.py`` only add the I/O.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar

import numpy as np
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from trt_client import labels
from trt_client.errors import ModelNotReady, ServerUnreachable, TrtClientError, translate
from trt_client.requests import RequestIds
from trt_client.tensors import ModelSpec, TensorInfo, prepare, results

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")
Results = dict[str, np.ndarray]
Url = str | Sequence[str]

SERVICE = "inference.GRPCInferenceService"
TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")
SEVERAL_ADDRESSES = ("several addresses must be IP addresses with a port (10.0.0.1:8001, [fd00::1]:8001), all of "
                     "one family; for host names, use one DNS name that resolves to every replica: "
                     "dns:///triton-headless:8001")


@dataclass(frozen=True)
class Call:
    """One call of the tritonclient client, for the client to make and answer with its result."""

    method: str
    kwargs: Mapping[str, Any]


@dataclass(frozen=True)
class Pause:
    """Wait this long before the next step (a server that is still starting)."""

    seconds: float


Steps = Generator[Call | Pause, Any, T]


def grpc_target(url: Url) -> str:
    """The gRPC target for ``url``: one address, a list of them (or a comma-separated string) as
    an ``ipv4:``/``ipv6:`` target, or a target that already names its scheme (``dns:///name:8001``)."""
    if isinstance(url, str):
        url = url.strip()
        if url.startswith(TARGET_SCHEMES) or "," not in url:
            if not url:
                raise ValueError("url is empty: give the server's gRPC address, e.g. 127.0.0.1:7001")
            return url
        url = url.split(",")
    addresses = [a.strip() for a in url]
    if not addresses or not all(addresses):
        raise ValueError(f"url {list(url)!r} has an empty address")
    if len(addresses) == 1:
        return addresses[0]
    families = set()
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            families.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise ValueError(f"{address!r}: {SEVERAL_ADDRESSES}") from None
        if not port.isdigit() or (families == {6} and not host.startswith("[")):
            raise ValueError(f"{address!r}: {SEVERAL_ADDRESSES}")
    if len(families) > 1:
        raise ValueError(f"{addresses!r}: {SEVERAL_ADDRESSES}")
    return f"ipv{families.pop()}:{','.join(addresses)}"


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """gRPC metadata keys are lower case ASCII; Triton's restricted-API keys travel this way."""
    checked = {}
    for key, value in (headers or {}).items():
        name = str(key).lower()
        if not name or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name) or name.endswith("-bin"):
            raise ValueError(f"header {key!r}: a gRPC header name holds only letters, digits, '-', '_' and '.'")
        if not isinstance(value, str) or not value.isascii() or not value.isprintable():
            raise ValueError(f"header {key!r}: the value must be printable ASCII text")
        checked[name] = value
    return checked


def _check_tls(ssl: bool, root_certificates, private_key, certificate_chain) -> dict[str, Any]:
    files = {"root_certificates": root_certificates, "private_key": private_key,
             "certificate_chain": certificate_chain}
    given = {name: str(path) for name, path in files.items() if path is not None}
    if not ssl:
        if given:
            raise ValueError(f"{', '.join(given)} given without ssl=True (trt-client --ssl): TLS is off")
        return {}
    if ("private_key" in given) != ("certificate_chain" in given):
        raise ValueError("mutual TLS needs both private_key and certificate_chain (the client's key and certificate)")
    for name, path in given.items():
        if not Path(path).is_file():
            raise ValueError(f"{name}: no such file {path}")
    return {"ssl": True, **given}


class Settings(TypedDict, total=False):
    """The keyword settings of ``client.Inference`` and ``aio.Inference``; their defaults and
    checks are ``Options.check``'s, in one place for both clients."""

    timeout: float | None
    max_in_flight: int
    when_full: Literal["wait", "raise"]
    connect_attempts: int
    retry_interval: float
    ssl: bool
    root_certificates: str | Path | None
    private_key: str | Path | None
    certificate_chain: str | Path | None
    headers: Mapping[str, str] | None
    retry_unavailable: bool


@dataclass(frozen=True)
class Options:
    """An ``Inference``'s settings, checked once (see ``client.Inference`` for their meaning)."""

    url: str
    target: str
    model_name: str
    model_version: str
    timeout: float | None
    max_in_flight: int
    when_full: Literal["wait", "raise"]
    connect_attempts: int
    retry_interval: float
    tls: Mapping[str, Any]
    headers: Mapping[str, str]
    retry_unavailable: bool

    @classmethod
    def check(cls, url: Url, model_name: str, model_version: str | int = "", *, timeout: float | None = 60.0,
              max_in_flight: int = 64, when_full: str = "wait", connect_attempts: int = 5,
              retry_interval: float = 1.0, ssl: bool = False, root_certificates: str | Path | None = None,
              private_key: str | Path | None = None, certificate_chain: str | Path | None = None,
              headers: Mapping[str, str] | None = None, retry_unavailable: bool = True) -> Options:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if when_full not in ("wait", "raise"):
            raise ValueError("when_full must be 'wait' or 'raise'")
        if connect_attempts < 1:
            raise ValueError("connect_attempts must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive seconds, or None for no deadline")
        if not model_name:
            raise ValueError("model_name is empty")
        target = grpc_target(url)
        shown = url if isinstance(url, str) else ",".join(url)
        return cls(shown, target, model_name, str(model_version or ""), timeout, max_in_flight, when_full,
                   connect_attempts, retry_interval, _check_tls(ssl, root_certificates, private_key, certificate_chain),
                   _check_headers(headers), retry_unavailable)

    def channel_args(self) -> list[tuple[str, Any]]:
        """tritonclient's own channel settings, plus gRPC's ``round_robin`` over every address
        the target names, a short reconnect backoff (a restarted server is used within about
        0.5 s) and, with ``retry_unavailable``, one more attempt of a call that failed with
        UNAVAILABLE; gRPC's retry throttling stops retries while most calls fail (overload)."""
        keepalive = KeepAliveOptions()
        args = [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.lb_policy_name", "round_robin"),
            # While it waits to reconnect gRPC fails every call at once: 0.1 s after a failed attempt,
            # then 1.6 times longer each time up to 0.5 s (+-20 %), so a server that comes back is
            # used within about 0.5 s of its readiness (gRPC's default, up to 120 s, left calls
            # failing for seconds). grpc.min_reconnect_backoff_ms is the connect timeout, not a wait.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ]
        if self.retry_unavailable:
            retry = {"maxAttempts": 2, "initialBackoff": "0.05s", "maxBackoff": "0.5s", "backoffMultiplier": 2,
                     "retryableStatusCodes": ["UNAVAILABLE"]}
            config = {"methodConfig": [{"name": [{"service": SERVICE}], "retryPolicy": retry}],
                      "retryThrottling": {"maxTokens": max(10, 2 * self.max_in_flight), "tokenRatio": 0.1}}
            args += [("grpc.service_config", json.dumps(config)),
                     ("grpc.per_rpc_retry_buffer_size", MAX_GRPC_MESSAGE_SIZE)]
        return args

    def client_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``tritonclient.grpc[.aio].InferenceServerClient``."""
        return {"url": self.target, "channel_args": self.channel_args(), **self.tls}

    def per_call(self) -> dict[str, Any]:
        """What every call carries: the headers and the deadline."""
        return {"headers": dict(self.headers) or None, "client_timeout": self.timeout}

    def model_kwargs(self) -> dict[str, Any]:
        """What every call about the model carries."""
        return {"model_name": self.model_name, "model_version": self.model_version, **self.per_call()}


def _spec_steps(options: Options) -> Steps[ModelSpec]:
    if not (yield Call("is_server_live", options.per_call())):
        raise ServerUnreachable(f"the Triton server at {options.url} is not live")
    if not (yield Call("is_model_ready", options.model_kwargs())):
        version = f" version {options.model_version}" if options.model_version else ""
        try:
            index = yield Call("get_model_repository_index", {"as_json": True, **options.per_call()})
            listing = ", ".join(m["name"] for m in index.get("models", [])) or "no models"
        except InferenceServerException as error:  # the repository API may be restricted to a key
            listing = f"(its model list is not readable: {error.message()})"
        raise ModelNotReady(f"model {options.model_name!r}{version} is not ready at {options.url}; "
                            f"the server has: {listing}")
    metadata = yield Call("get_model_metadata", {**options.model_kwargs(), "as_json": True})
    config = yield Call("get_model_config", {**options.model_kwargs(), "as_json": True})
    return ModelSpec.from_server(metadata, config["config"])


def _server_starting(error: InferenceServerException, options: Options) -> bool:
    """UNAVAILABLE is what a server that is still starting answers; a failed TLS handshake, a
    refused client certificate and a restricted API without its key are UNAVAILABLE too, but
    waiting does not cure them."""
    return ("UNAVAILABLE" in str(error.status() or "")
            and type(translate(error, "", "", tls=options.tls)) is ServerUnreachable)


def connect_steps(options: Options) -> Steps[ModelSpec]:
    """Read the model's description, retrying while the server starts; raises a TrtClientError."""
    for attempt in range(options.connect_attempts):
        try:
            return (yield from _spec_steps(options))
        except InferenceServerException as error:
            if not _server_starting(error, options) or attempt == options.connect_attempts - 1:
                raise translate(error, options.url, options.model_name, tls=options.tls) from None
        yield Pause(options.retry_interval)
    raise AssertionError("unreachable")


class InferenceState:
    """The state both clients keep: options, the model's description once connected, the
    requests outstanding, and whether ``close`` was called."""

    def __init__(self, url: Url, model_name: str, model_version: str | int = "", **settings: Unpack[Settings]):
        self.options = Options.check(url, model_name, model_version, **settings)
        self.spec: ModelSpec | None = None
        self.closed = False
        self.ids = RequestIds()
        self.peak_in_flight = 0

    # The tutorial's attribute names.
    @property
    def url(self) -> str:
        return self.options.url

    @property
    def model_name(self) -> str:
        return self.options.model_name

    @property
    def model_version(self) -> str:
        return self.options.model_version

    @property
    def timeout(self) -> float | None:
        return self.options.timeout

    @property
    def max_in_flight(self) -> int:
        return self.options.max_in_flight

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.connected().inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.connected().outputs

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The model's class names (its config's ``class_names`` parameter), or None when it has none."""
        return self.connected().class_names

    def names_of(self, classes: np.ndarray | Sequence) -> np.ndarray:
        """A ``classes`` output with each index replaced by its class name (its number when unnamed)."""
        return labels.name_classes(classes, self.class_names)

    def connected(self) -> ModelSpec:
        """The model's description; raises when the Inference is closed or not yet connected."""
        if self.closed:
            raise TrtClientError("this Inference is closed")
        if self.spec is None:
            raise TrtClientError("not connected: use 'async with' or await connect() first")
        return self.spec

    def infer_call(self, input: Mapping[str, Any]) -> Call:  # noqa: A002 - the tutorial's name
        """The request for ``input``, checked against the model (``InvalidInput`` before sending)."""
        tensors = prepare(self.connected(), input)
        return Call("infer", {"inputs": tensors, **self.options.model_kwargs()})

    def translated(self, error: InferenceServerException, input_id: Any = None) -> TrtClientError:
        return translate(error, self.url, self.model_name, input_id, tls=self.options.tls)

    def outcome(self, result: Any, error: BaseException | None, input_id: Any) -> Results | TrtClientError:
        """What ``get`` hands out for a finished asynchronous request: its outputs or its error."""
        if isinstance(error, InferenceServerException):
            return self.translated(error, input_id)
        if error is not None:
            return TrtClientError(f"request failed: {error}", input_id)
        try:
            return results(self.spec, result)
        except Exception as problem:  # noqa: BLE001 - delivered to get()
            return TrtClientError(f"could not read the outputs: {problem}", input_id)

    def outputs_of(self, result: Any) -> Results:
        return results(self.spec, result)
