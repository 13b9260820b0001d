"""Locked APIs and TLS on the real server: each admin group refused without the key and served with
it, over HTTP and gRPC; an inference key; gRPC over TLS and mutual TLS with certificates made here."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from servers import start_script
from trtis.serving import ServerConfig, serve, state_folder
from trtis.serving.security import ADMIN_APIS, GrpcTls, Security, SecurityError, new_key

INFERENCE_KEY = new_key()
# One call of each admin group (tritonclient names them alike in both protocols).
ADMIN_CALLS = {
    "logging": lambda c, h: c.update_log_settings({"log_info": False, "log_error": False}, headers=h),
    "trace": lambda c, h: c.get_trace_settings(headers=h),
    "shared-memory": lambda c, h: c.get_system_shared_memory_status(headers=h),
    "model-repository": lambda c, h: c.get_model_repository_index(headers=h),
    "statistics": lambda c, h: c.get_inference_statistics(headers=h),
}


@pytest.fixture(scope="module")
def locked(echo_repository, certificates, tmp_path_factory):
    """start.sh's defaults (admin APIs behind a key), plus an inference key and gRPC over TLS."""
    security = Security(inference_key=INFERENCE_KEY,
                        grpc_tls=GrpcTls(certificates["server.pem"], certificates["server.key"]))
    with serve(echo_repository, ServerConfig(security=security), state_dir=tmp_path_factory.mktemp("locked"),
               restricted=True) as server:
        yield server


def clients(server, certificates) -> dict:
    return {"http": httpclient.InferenceServerClient(server.http_url),
            "grpc": grpcclient.InferenceServerClient(server.grpc_url, ssl=True,
                                                     root_certificates=str(certificates["ca.pem"]))}


def echo(client, module, headers=None):
    data = module.InferInput("data", [1, 4], "FP32")
    data.set_data_from_numpy(np.arange(4, dtype=np.float32)[None])
    return client.infer("echo", [data], headers=headers).as_numpy("echo")


def test_the_lock_covers_every_admin_group():
    assert set(ADMIN_CALLS) == set(ADMIN_APIS)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("group", sorted(ADMIN_CALLS))
def test_an_admin_group_is_refused_without_the_key_and_served_with_it(locked, certificates, protocol, group):
    client = clients(locked, certificates)[protocol]
    for wrong in (None, {"admin-key": "not-the-key-0123456789", "triton-grpc-protocol-admin-key": "not-the-key-0123"}):
        with pytest.raises(InferenceServerException, match="restricted"):
            ADMIN_CALLS[group](client, wrong)
    if group != "logging":  # keep the server's log as it is
        ADMIN_CALLS[group](client, locked.admin_headers)
    assert locked.admin_headers["admin-key"] == (locked.state_dir / "admin.key").read_text().strip()


def test_the_backends_own_shared_memory_cannot_be_registered_without_the_key(locked, certificates):
    """The first step of CVE-2025-23319/23320/23334: register the Python backend's region."""
    region = next(name for name in os.listdir("/dev/shm") if name.startswith("trtis_"))
    for client in clients(locked, certificates).values():
        with pytest.raises(InferenceServerException, match="restricted"):
            client.register_system_shared_memory("stolen", f"/{region}", 1024)


def test_the_backends_shared_memory_is_readable_by_its_own_user_alone(locked):
    """Every request's tensors pass through these regions: the server's umask keeps other local users out."""
    prefix = json.loads((locked.state_dir / state_folder.STATE_FILE).read_text())["shm_prefix"]
    regions = list(Path("/dev/shm").glob(f"{prefix}*"))
    assert regions and {stat.S_IMODE(region.stat().st_mode) for region in regions} == {0o600}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_health_stays_open_and_inference_needs_the_inference_key(locked, certificates, protocol):
    client, module = clients(locked, certificates)[protocol], {"http": httpclient, "grpc": grpcclient}[protocol]
    assert client.is_server_live() and client.is_server_ready()
    with pytest.raises(InferenceServerException, match="restricted"):
        echo(client, module)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_model_metadata("echo")
    assert echo(client, module, locked.security.inference_headers).tolist() == [[0, 1, 2, 3]]


def test_grpc_refuses_a_client_without_tls_or_trusting_another_ca(locked, certificates):
    for arguments in ({}, {"ssl": True, "root_certificates": str(certificates["other-ca.pem"])}):
        client = grpcclient.InferenceServerClient(locked.grpc_url, **arguments)
        with pytest.raises(InferenceServerException):
            client.is_server_live(client_timeout=10)


def test_mutual_tls_serves_only_clients_with_a_certificate_of_the_ca(echo_repository, certificates, tmp_path):
    tls = GrpcTls(certificates["server.pem"], certificates["server.key"], client_ca=certificates["ca.pem"])
    with serve(echo_repository, ServerConfig(security=Security(grpc_tls=tls)), state_dir=tmp_path) as server:
        trusted = dict(ssl=True, root_certificates=str(certificates["ca.pem"]))
        client = grpcclient.InferenceServerClient(server.grpc_url, **trusted, private_key=str(certificates["client.key"]),
                                                  certificate_chain=str(certificates["client.pem"]))
        assert echo(client, grpcclient).tolist() == [[0, 1, 2, 3]]
        for stranger in ({}, {"private_key": str(certificates["stranger.key"]),
                              "certificate_chain": str(certificates["stranger.pem"])}):
            with pytest.raises(InferenceServerException):
                grpcclient.InferenceServerClient(server.grpc_url, **trusted, **stranger).is_server_live(client_timeout=10)


def test_an_exposed_address_is_named_with_what_it_exposes():
    assert Security(admin_key=new_key()).exposure_warnings("127.0.0.1", 1, 2, 3) == []
    assert Security().exposure_warnings("::1", 1, 2, 3) == []
    warnings = " ".join(Security(admin_key=new_key()).exposure_warnings("0.0.0.0", 7000, 7001, 7002))
    for expected in ("HTTP (port 7000) is plain text", "metrics (port 7002)", "gRPC (port 7001) is plain text",
                     "anyone who reaches the server can run inference"):
        assert expected in warnings
    assert "admin APIs" not in warnings
    assert "admin APIs" in " ".join(Security().exposure_warnings("10.1.2.3", 7000, 7001, 7002))


def test_start_sh_makes_a_private_admin_key_and_refuses_a_weak_one(echo_repository, tmp_path):
    script = start_script(echo_repository, tmp_path / "state")
    (tmp_path / "weak.key").write_text("secret\n")
    weak = script.start("--admin-key-file", str(tmp_path / "weak.key"))
    assert weak.returncode != 0 and "at least 16 characters" in weak.stderr
    try:
        started = script.start("--host", "0.0.0.0")
        assert started.returncode == 0, started.stderr
        key = tmp_path / "state" / "admin.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert f"admin-key: $(cat {key})" in started.stdout
        assert "HTTP (port" in started.stderr and "is plain text" in started.stderr
        client = httpclient.InferenceServerClient(f"127.0.0.1:{script.http}")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_inference_statistics()
        client.get_inference_statistics(headers={"admin-key": key.read_text().strip()})
    finally:
        script.stop()


def test_tls_files_must_exist():
    with pytest.raises(SecurityError, match="not found"):
        Security(grpc_tls=GrpcTls("no-cert.pem", "no-key.pem"))
