"""The client's exceptions: one type per thing a caller can act on, each saying what to do.

Every error of an asynchronous request carries the request's ``input_id``.
"""
from __future__ import annotations

from collections.abc import Mapping
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
    """The model's queue is full (its ``max_queue_size``), or the request waited there past the queue's
    timeout: the server refused it rather than queue it without end."""


class InferenceFailed(TrtClientError):
    """The server took the request but the model failed on it with a server-side error."""


TLS_HINT = ("check root_certificates (the CA that signed the server's certificate), the address the certificate "
            "names, and for mutual TLS the client's private_key and certificate_chain")


def _tls_fault(lowered: str) -> bool:
    """A TLS handshake that failed on TLS grounds; one cut off by a server that died or is starting
    ("Handshake read failed (recvmsg:Connection reset by peer)") is no certificate's fault."""
    cut_off = "handshake read failed" in lowered or "handshake write failed" in lowered
    return ("handshake" in lowered or "ssl_error" in lowered) and not cut_off


def _client_certificate_refused(url: str, message: str, tls: Mapping[str, Any], input_id: Any) -> TlsFailed:
    """A server that closes a TLS connection this client verified requires a client certificate
    (mutual TLS) and refused the one given, or its absence: the TLS 1.3 handshake ends on the
    client's side before the server checks the certificate, so gRPC sees only a closed socket."""
    if "certificate_chain" in tls:
        return TlsFailed(f"the server at {url} refused the client certificate {tls['certificate_chain']} ({message}); "
                         "it accepts only a certificate for client authentication, unexpired and signed by the CA it "
                         "trusts for clients (Triton's --grpc-root-cert): check certificate_chain and private_key",
                         input_id)
    return TlsFailed(f"the server at {url} requires a client certificate (mutual TLS) and closed the connection "
                     f"({message}); pass private_key and certificate_chain (trt-client --private-key, "
                     "--certificate-chain), a certificate signed by the CA the server trusts for clients", input_id)


def translate(error: InferenceServerException, url: str, model: str, input_id: Any = None,
              tls: Mapping[str, Any] | None = None) -> TrtClientError:
    """Turn a tritonclient error into the matching trt_client error; ``tls`` is the client's TLS
    settings (``core.Options.tls``, empty with TLS off), so that a hint never asks for what is set."""
    status = str(error.status() or "")
    message = error.message() or str(error)
    lowered = message.lower()
    if "protocol is restricted" in lowered or "PERMISSION_DENIED" in status or "UNAUTHENTICATED" in status:
        header = message.split("expecting header")[-1].strip(" '\"") if "expecting header" in message else "KEY"
        return AccessDenied(f"the server at {url} refused the call ({message}); send the key with "
                            f"headers={{{header!r}: ...}} (trt-client --header {header}=...)", input_id)
    if "UNAVAILABLE" in status and _tls_fault(lowered):
        return TlsFailed(f"the TLS connection to {url} failed ({message}); {TLS_HINT}", input_id)
    if "exceeds maximum queue size" in lowered or "request timeout expired" in lowered:
        return Overloaded(f"model {model!r} at {url} is overloaded: its queue is full or the request waited past the "
                          f"queue's timeout ({message}); send fewer requests at once (max_in_flight), or give the model "
                          "more instances or replicas", input_id)
    if "UNAVAILABLE" in status and "stream removed" in lowered:
        return ServerUnreachable(f"the server at {url} went away during the request ({message}); with several "
                                 "replicas, retry_unavailable=True sends such a request once more, to another one",
                                 input_id)
    if "UNAVAILABLE" in status and "socket closed" in lowered and tls:
        return _client_certificate_refused(url, message, tls, input_id)
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
