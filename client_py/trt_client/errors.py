"""The client's exceptions: one type per thing a caller can act on, each saying what to do.

Every error of an asynchronous request carries the request's ``input_id``.
"""
from __future__ import annotations

from typing import Any

from tritonclient.utils import InferenceServerException


class TrtClientError(Exception):
    """Base of every error raised by trt_client."""

    def __init__(self, message: str, input_id: Any = None):
        super().__init__(message)
        self.input_id = input_id


class ServerUnreachable(TrtClientError):
    """No Triton server answers at the URL (not started, stopped, wrong address or port)."""


class TlsFailed(ServerUnreachable):
    """The TLS handshake failed: a CA that did not sign the server's certificate, a certificate
    for another name, or a missing or refused client certificate (mutual TLS)."""


class ModelNotReady(TrtClientError):
    """The model (or that version of it) is not in the repository, or is not loaded."""


class InvalidInput(TrtClientError):
    """An input's name, data type or shape does not match the model (found before sending), or
    the model refused what it holds (INVALID_ARGUMENT: a corrupt image, say)."""


class RequestTimeout(TrtClientError, TimeoutError):
    """A request, or a wait for a result, took longer than its timeout."""


class TooManyInFlight(TrtClientError):
    """``async_run`` with ``when_full="raise"`` found the bound on requests in flight reached."""


class AccessDenied(TrtClientError):
    """The server restricts this API to callers that send a key header (Triton's
    ``--grpc-restricted-protocol``), and the call lacked it or had a wrong one."""


class Overloaded(TrtClientError):
    """The model's queue is full (its ``max_queue_size``): the server refused the request at once."""


class InferenceFailed(TrtClientError):
    """The server took the request but the model failed on it with a server-side error."""


TLS_HINT = ("check root_certificates (the CA that signed the server's certificate), the address the certificate "
            "names, and for mutual TLS the client's private_key and certificate_chain")


def translate(error: InferenceServerException, url: str, model: str, input_id: Any = None) -> TrtClientError:
    """Turn a tritonclient error into the matching trt_client error."""
    status = str(error.status() or "")
    message = error.message() or str(error)
    lowered = message.lower()
    if "protocol is restricted" in lowered or "PERMISSION_DENIED" in status or "UNAUTHENTICATED" in status:
        header = message.split("expecting header")[-1].strip(" '\"") if "expecting header" in message else "KEY"
        return AccessDenied(f"the server at {url} refused the call ({message}); send the key with "
                            f"headers={{{header!r}: ...}} (trt-client --header {header}=...)", input_id)
    if "UNAVAILABLE" in status and ("handshake" in lowered or "ssl_error" in lowered):
        return TlsFailed(f"the TLS connection to {url} failed ({message}); {TLS_HINT}", input_id)
    if "exceeds maximum queue size" in lowered:
        return Overloaded(f"model {model!r} at {url} has a full queue ({message}); send fewer requests at once "
                          "(max_in_flight), or give the model more instances or replicas", input_id)
    if "UNAVAILABLE" in status and "stream removed" in lowered:
        return ServerUnreachable(f"the server at {url} went away during the request ({message}); with several "
                                 "replicas, retry_unavailable=True sends such a request once more, to another one",
                                 input_id)
    if "UNAVAILABLE" in status and "model" not in lowered:
        hint = ("; if the server uses TLS, pass ssl=True and root_certificates (with private_key and "
                "certificate_chain for mutual TLS)") if "socket closed" in lowered else ""
        return ServerUnreachable(f"no Triton server answers at {url} ({message}); start it with ./start.sh "
                                 f"or check the address{hint}", input_id)
    if "NOT_FOUND" in status or "UNAVAILABLE" in status:
        return ModelNotReady(f"model {model!r} is not ready at {url}: {message}", input_id)
    if "DEADLINE_EXCEEDED" in status:
        return RequestTimeout(f"request to model {model!r} timed out ({message}); raise the timeout or lower the load",
                              input_id)
    if "INVALID_ARGUMENT" in status:
        return InvalidInput(f"model {model!r} refused the request: {message}", input_id)
    return InferenceFailed(f"model {model!r} failed on the request: {message}", input_id)
