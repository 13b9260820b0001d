"""The HTTP front door (nginx): no single request of any size, content type or nesting depth kills
the server. Each request that crashed Triton 2.51 (or would fill it) is refused with a JSON error
before Triton sees it, or reaches a Triton whose thread stacks hold it; the server keeps serving
without a restart, through the door and over gRPC."""
from __future__ import annotations

import http.client
import json
import socket

import numpy as np
import pytest
import tritonclient.http as triton_http

from trtis.serving import ServerConfig, front_door, serve, state_folder
from trtis.serving.supervisor import Supervision

MiB = 1 << 20


def nested(depth: int) -> bytes:
    return b'{"inputs":' + b"[" * depth + b"]" * depth + b"}"


# name: (path, body, headers, the status expected through the front door)
HOSTILE = {
    "4 MiB of form data (curl's default type)": ("/v2/health/live", bytes(4 * MiB),
                                                 {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    "multipart form data": ("/v2/models/echo/infer", b"--x\r\n\r\n--x--", {"Content-Type": "multipart/form-data; boundary=x"}, 415),
    "a gzip-compressed body": ("/v2/models/echo/infer", b"\x1f\x8b" + bytes(64), {"Content-Encoding": "gzip"}, 415),
    "JSON nested 300,000 deep (killed Triton)": ("/v2/models/echo/infer", nested(300_000),
                                                 {"Content-Type": "application/json"}, 400),
    "JSON nested 1,000,000 deep": ("/v2/models/echo/infer", nested(1_000_000), {"Content-Type": "application/json"}, 413),
    "a binary request whose JSON header is 2 MB": ("/v2/models/echo/infer", nested(1_000_000),
                                                   {"Inference-Header-Content-Length": str(2_000_002)}, 413),
    "10 MB of octet-stream without a JSON header": ("/v2/health/live", bytes(10 * MiB),
                                                    {"Content-Type": "application/octet-stream"}, 413),
    "deep JSON to generate with a binary header it ignores": ("/v2/models/echo/generate", nested(1_000_000),
                                                               {"Inference-Header-Content-Length": "1"}, 413),
    "a | in the URL": ("/v2/models/echo|1|9/infer", b"{}", {}, 400),
    "a chunked body without a length": ("/v2/models/echo/infer", iter([b"{}"]), {"Transfer-Encoding": "chunked"}, 413),
    # Triton 2.51 answers a parse error with 500, and the door cannot tell that 500 from the others.
    "malformed JSON": ("/v2/models/echo/infer", b'{"inputs": [', {"Content-Type": "application/json"}, 500),
    "a NUL in the model name": ("/v2/models/echo%00x/infer", b"{}", {}, 400),
}


@pytest.fixture(scope="module")
def server(echo_repository, tmp_path_factory):
    if front_door.unavailable_reason():
        pytest.skip(f"no front door here: {front_door.unavailable_reason()}")
    with serve(echo_repository, state_dir=tmp_path_factory.mktemp("front_door")) as server:
        yield server


def post(port: int, path: str, body, headers: dict, method: str = "POST") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers, encode_chunked="Transfer-Encoding" in headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    return post(port, path, None, {}, method="GET")


def triton_port(server) -> int:
    """Triton's own HTTP port behind the door (the supervisor's readiness URL)."""
    return int(state_folder.state(server.state_dir)["ready_url"].split(":")[2].split("/")[0])


def served(server) -> np.ndarray:
    client = triton_http.InferenceServerClient(server.http_url)
    data = triton_http.InferInput("data", [2, 4], "FP32")
    data.set_data_from_numpy(np.arange(8, dtype=np.float32).reshape(2, 4))
    try:
        return client.infer("echo", [data]).as_numpy("echo")
    finally:
        client.close()


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_request_is_refused_clearly_and_the_server_lives_on(server, case):
    path, body, headers, expected = HOSTILE[case]
    pid = state_folder.state(server.state_dir)["server"]["pid"]
    status, answer = post(server.ports.http, path, body, headers)
    assert status == expected, answer[:300]
    if expected != 400 or "NUL" not in case:  # nginx answers a NUL in the URL with its own page
        assert json.loads(answer)["error"], answer[:300]
    np.testing.assert_array_equal(served(server), np.arange(8, dtype=np.float32).reshape(2, 4))
    state = state_folder.state(server.state_dir)
    assert state["server"]["pid"] == pid and state["restarts"] == 0, "the request cost a restart"


def test_a_200_mb_body_is_refused_from_its_header_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.ports.http), timeout=10) as connection:
        connection.sendall(b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                           b"Inference-Header-Content-Length: 2\r\nContent-Length: 200000000\r\n\r\n{}")
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"over 64 MB" in answer


def test_triton_behind_the_door_holds_the_deepest_json_the_door_lets_through(server):
    """Its thread stacks are sized for it: JSON at the door's limit, nested all the way, gets a 400."""
    depth = (front_door.JSON_LIMIT - len(nested(0))) // 2
    status, answer = post(triton_port(server), "/v2/models/echo/infer", nested(depth), {"Content-Type": "application/json"})
    assert status == 400, answer[:300]
    assert state_folder.state(server.state_dir)["restarts"] == 0


def test_a_bodiless_post_passes(server):
    """curl -X POST sends neither a length nor chunks: the repository index answers."""
    with socket.create_connection(("127.0.0.1", server.ports.http), timeout=10) as connection:
        connection.sendall(b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"echo"' in answer


def test_headers_over_the_limit_are_refused(server):
    status, _ = post(server.ports.http, "/v2/models/echo/infer", b"{}", {"X-Padding": "x" * 64_000})
    assert status in (400, 431)
    assert served(server).shape == (2, 4)


def test_without_nginx_http_stays_on_loopback_and_says_so(echo_repository, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TRTIS_NGINX", "")
    with serve(echo_repository, state_dir=tmp_path) as server:
        assert state_folder.state(tmp_path)["proxy"] is None
        assert served(server).shape == (2, 4)
    assert "nginx is not installed" in caplog.text and "127.0.0.1 only" in caplog.text


def test_the_supervisors_flag_holds_readiness_at_the_door_and_only_readiness(server):
    conf = server.state_dir / "nginx" / "nginx.conf"
    front_door.set_not_ready(conf, "a test's reason")
    try:
        assert get(server.ports.http, "/v2/health/ready")[0] == 503
        assert get(server.ports.http, "/v2/health/live")[0] == 200 and served(server).shape == (2, 4)
    finally:
        front_door.set_not_ready(conf, None)
    assert get(server.ports.http, "/v2/health/ready")[0] == 200


def test_a_nearly_full_dev_shm_keeps_the_server_from_reporting_ready(echo_repository, tmp_path):
    """Triton reports ready while the Python backend cannot grow its shared memory; the supervisor's
    check (a floor above what /dev/shm has free) holds the server not ready, and the start says why."""
    with pytest.raises(state_folder.LaunchError, match="/dev/shm has .* MB free"):
        with serve(echo_repository, ServerConfig(supervision=Supervision(shm_floor_mb=1 << 30)), state_dir=tmp_path):
            pass
    assert not state_folder.running(tmp_path)


def test_a_body_over_the_doors_memory_buffer_reaches_triton(server):
    """nginx writes a body over 1 MB to its scratch folder in the state folder first (its workers,
    started by root, would run as nobody and fail there)."""
    header = json.dumps({"inputs": [{"name": "data", "shape": [8, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 2 * MiB}}]}).encode()
    status, body = post(server.ports.http, "/v2/models/echo/infer", header + bytes(2 * MiB),
                        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
    assert status == 400 and b"Expected 128, got 2097152" in body, (status, body)  # Triton's own answer
