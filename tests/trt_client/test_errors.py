"""What ``translate`` makes of gRPC's connection errors, with the messages gRPC gave against
tritonserver (test_client_security.py has the same against the servers themselves; a server
killed during a TLS handshake is a race no server test can hit on purpose)."""
from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from trt_client.errors import ServerUnreachable, TlsFailed, translate

URL = "127.0.0.1:7001"
ALL_FAILING = "connections to all backends failing; last error: UNAVAILABLE: ipv4:127.0.0.1:7001: "
TLS = {"ssl": True, "root_certificates": "ca.pem"}
MUTUAL = {**TLS, "private_key": "client.key", "certificate_chain": "client.pem"}


def unavailable(details: str) -> InferenceServerException:
    return InferenceServerException(ALL_FAILING + details, status="StatusCode.UNAVAILABLE")


@pytest.mark.parametrize("details, tls, kind, says", [
    ("Socket closed", {}, ServerUnreachable, "if the server uses TLS, pass ssl=True"),
    ("Socket closed", TLS, TlsFailed, "requires a client certificate (mutual TLS)"),
    ("Socket closed", MUTUAL, TlsFailed, "refused the client certificate client.pem"),
    ("Handshake read failed (recvmsg:Connection reset by peer (104))", TLS, ServerUnreachable,
     "no Triton server answers"),
    ("Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED", TLS, TlsFailed,
     "check root_certificates"),
])
def test_connection_errors_say_what_is_wrong_and_never_ask_for_what_is_set(details, tls, kind, says):
    error = translate(unavailable(details), URL, "echo", tls=tls)
    assert type(error) is kind and says in str(error), error
    if tls:
        assert "ssl=True" not in str(error), error
