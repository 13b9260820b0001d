"""TLS, mutual TLS and restricted-API keys, through the client, against tritonserver started with
its own TLS and ``--grpc-restricted-protocol`` flags and certificates this test makes."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from client_harness import bmp, make_certificates, tritonserver
from trt_client import client
from trt_client.errors import AccessDenied, ModelNotReady, ServerUnreachable, TlsFailed

KEY = {"triton-grpc-protocol-admin-key": "secret"}  # Triton prefixes a gRPC restricted key's header name
CLI = [sys.executable, "-m", "trt_client.cli"]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def secure_server(echo_repository, certificates, tmp_path_factory):
    """TLS; inference and the model repository API only for callers with the admin key."""
    flags = ["--grpc-use-ssl=true", f"--grpc-server-cert={certificates['server.pem']}",
             f"--grpc-server-key={certificates['server.key']}",
             "--grpc-restricted-protocol=inference,model-repository:admin-key=secret"]
    with tritonserver(echo_repository, flags, tmp_path_factory.mktemp("secure")) as server:
        yield server


@pytest.fixture(scope="module")
def mutual_server(echo_repository, certificates, tmp_path_factory):
    flags = ["--grpc-use-ssl-mutual=true", f"--grpc-server-cert={certificates['server.pem']}",
             f"--grpc-server-key={certificates['server.key']}", f"--grpc-root-cert={certificates['ca.pem']}"]
    with tritonserver(echo_repository, flags, tmp_path_factory.mktemp("mutual")) as server:
        yield server


def test_tls_with_the_servers_ca_and_the_key(clients, secure_server, certificates):
    runner = clients.open(secure_server.grpc_url, "echo", ssl=True, root_certificates=certificates["ca.pem"],
                          headers=KEY)
    assert runner.run(input={"data": b"over TLS"})["echo"].tolist() == [[b"over TLS"]]
    runner.async_run(input={"data": b"async"}, input_id="a")
    assert runner.get(timeout=30)[1]["echo"].tolist() == [[b"async"]]


@pytest.mark.parametrize("headers", [None, {"triton-grpc-protocol-admin-key": "wrong"}, {"admin-key": "secret"}])
def test_a_restricted_api_without_the_right_key_is_refused(clients, secure_server, certificates, headers):
    runner = clients.open(secure_server.grpc_url, "echo", ssl=True, root_certificates=certificates["ca.pem"],
                          headers=headers)  # health, metadata and config stay open: connecting works
    with pytest.raises(AccessDenied, match="headers=\\{'triton-grpc-protocol-admin-key': ...\\}"):
        runner.run(input={"data": b"x"})
    runner.async_run(input={"data": b"x"}, input_id="refused")
    with pytest.raises(AccessDenied) as error:
        runner.get(timeout=30)
    assert error.value.input_id == "refused"


def test_the_model_repository_group_answers_only_with_the_key(clients, secure_server, certificates):
    tls = {"ssl": True, "root_certificates": certificates["ca.pem"]}
    with pytest.raises(ModelNotReady, match="the server has: .*\\becho\\b"):
        clients.open(secure_server.grpc_url, "no-such-model", headers=KEY, **tls)
    with pytest.raises(ModelNotReady, match="its model list is not readable.*restricted"):
        clients.open(secure_server.grpc_url, "no-such-model", **tls)


def test_a_wrong_ca_fails_at_once_and_says_what_to_check(clients, secure_server, certificates):
    with pytest.raises(TlsFailed, match="CERTIFICATE_VERIFY_FAILED.*check root_certificates"):
        clients.open(secure_server.grpc_url, "echo", ssl=True, root_certificates=certificates["stranger-ca.pem"],
                     headers=KEY, connect_attempts=100, retry_interval=1.0)  # not retried: it cannot heal


def test_plain_grpc_to_a_tls_server_suggests_tls(clients, secure_server):
    with pytest.raises(ServerUnreachable, match="pass ssl=True and root_certificates"):
        clients.open(secure_server.grpc_url, "echo", headers=KEY, connect_attempts=2, retry_interval=0.1)


def test_mutual_tls_with_a_client_certificate_from_the_servers_ca(clients, mutual_server, certificates):
    ca = certificates["ca.pem"]
    runner = clients.open(mutual_server.grpc_url, "echo", ssl=True, root_certificates=ca,
                          private_key=certificates["client.key"], certificate_chain=certificates["client.pem"])
    assert runner.run(input={"data": [b"a", b"bc"]})["length"].tolist() == [[1], [2]]


def test_a_missing_or_refused_client_certificate_is_named_and_not_retried(clients, mutual_server, certificates):
    """The server closes the connection after the handshake: the error says why and what to pass,
    suggests nothing already set (ssl=True), and comes at once (100 attempts would take 99 s)."""
    tls = {"ssl": True, "root_certificates": certificates["ca.pem"], "connect_attempts": 100, "retry_interval": 1.0}
    started = time.monotonic()
    expected = re.escape("requires a client certificate (mutual TLS)") + ".*" + re.escape(
        "pass private_key and certificate_chain (trt-client --private-key, --certificate-chain)")
    with pytest.raises(TlsFailed, match=expected) as missing:
        clients.open(mutual_server.grpc_url, "echo", **tls)
    stranger = certificates["stranger.pem"]
    with pytest.raises(TlsFailed, match=f"refused the client certificate {re.escape(str(stranger))} .*signed by the "
                                        "CA it trusts for clients") as refused:
        clients.open(mutual_server.grpc_url, "echo", private_key=certificates["stranger.key"],
                     certificate_chain=stranger, **tls)
    assert time.monotonic() - started < 30, "a refused client certificate was retried"
    for error in (missing.value, refused.value):
        assert "ssl=True" not in str(error) and "start it with" not in str(error), error


@pytest.mark.parametrize("settings, expected", [
    ({"root_certificates": "ca.pem"}, "root_certificates given without ssl=True"),
    ({"ssl": True, "private_key": "client.key"}, "mutual TLS needs both private_key and certificate_chain"),
    ({"ssl": True, "root_certificates": "/no/such/ca.pem"}, "root_certificates: no such file /no/such/ca.pem"),
    ({"headers": {"admin key": "x"}}, "a gRPC header name holds only"),
    ({"headers": {"key": "line\nbreak"}}, "printable ASCII"),
])
def test_contradictory_or_missing_settings_are_refused_before_connecting(settings, expected):
    with pytest.raises(ValueError, match=expected):
        client.Inference("127.0.0.1:1", "echo", **settings)


def test_cli_over_tls_with_a_key_and_over_mutual_tls(secure_server, mutual_server, certificates, tmp_path):
    image = tmp_path / "image.bmp"
    image.write_bytes(bmp())
    tls = ["--ssl", "--root-certificates", str(certificates["ca.pem"])]
    run = subprocess.run([*CLI, "--url", secure_server.grpc_url, "--model", "echo", "--json", *tls,
                          "--header", "triton-grpc-protocol-admin-key=secret", str(image)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["results"][0]["outputs"]["length"] == [[len(bmp())]]
    run = subprocess.run([*CLI, "--url", secure_server.grpc_url, "--model", "echo", *tls, str(image)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "--header triton-grpc-protocol-admin-key=" in run.stdout
    run = subprocess.run([*CLI, "--url", mutual_server.grpc_url, "--model", "echo", *tls,
                          "--private-key", str(certificates["client.key"]),
                          "--certificate-chain", str(certificates["client.pem"]), str(image)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([*CLI, "--model", "echo", "--root-certificates", str(certificates["ca.pem"]), str(image)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "without ssl=True (trt-client --ssl)" in run.stderr
