"""A client outlives a crash of its server: the tritonserver is killed with SIGKILL and its
supervisor starts it again on the same ports. While it is down every request fails at once with
``ServerUnreachable``; once its readiness is back (over HTTP and a fresh gRPC connection) the
client's requests succeed again within about half a second (gRPC's reconnect backoff, capped in
``core.Options.channel_args``), not the seconds of a longer backoff (3-4 s with a 5 s cap). And a
client closed after failed requests stops reconnecting (a listener in the dead server's place
counts the attempts)."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client_harness import echo_model, kill_tritonserver
from trtis import repository
from trtis.serving import serve
from trtis.serving.health import ready
from trt_client.errors import ServerUnreachable

FAILS_WITHIN_S = 5.0    # a request to the dead server fails by then (its timeout is 30 s)
RECONNECTS_WITHIN_S = 2.0  # after readiness; the backoff's cap is 0.5 s (+20 % jitter)
REQUEST = {"data": b"again"}


@pytest.fixture(scope="module")
def echo_alone(tmp_path_factory):
    """The echo model alone: the quickest server to start."""
    root = tmp_path_factory.mktemp("echo_alone")
    repository.write_repository(root, [echo_model()])
    return root


@pytest.fixture(scope="module")
def slow_to_load(tmp_path_factory):
    """The echo model alone, slow to load as a real model is: the server stays down long enough
    for gRPC's reconnect backoff to reach its cap."""
    root = tmp_path_factory.mktemp("slow_to_load")
    repository.write_repository(root, [echo_model(load_delay_ms=8_000)])
    return root


def _grpc_ready(url: str) -> bool:
    """Readiness through a client of its own (its own connection, no backoff of the runner's)."""
    try:
        with grpcclient.InferenceServerClient(url) as probe:
            return probe.is_server_ready(client_timeout=2)
    except InferenceServerException:
        return False


def _failures_until_ready(runner, server) -> tuple[int, float]:
    """Send requests to the killed server until its readiness is back over HTTP and gRPC; returns
    how many failed with ServerUnreachable and how long the slowest took to fail."""
    readiness = f"http://{server.http_url}/v2/health/ready"
    failures, slowest = 0, 0.0
    deadline = time.monotonic() + 300
    while not (ready(readiness, timeout=1) and _grpc_ready(server.grpc_url)):
        assert time.monotonic() < deadline, "the supervisor did not bring the server back"
        started = time.monotonic()
        try:
            runner.run(input=REQUEST)
            break  # gRPC came up a moment before the readiness checks saw it
        except ServerUnreachable:
            failures += 1
            slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    return failures, slowest


def _seconds_until_answered(runner) -> tuple[float, int]:
    """Send a request every 50 ms until one is answered; returns how long that took and the attempts."""
    started, attempts = time.monotonic(), 0
    while True:
        attempts += 1
        try:
            assert runner.run(input=REQUEST)["echo"].tolist() == [[b"again"]]
            return time.monotonic() - started, attempts
        except ServerUnreachable:
            if time.monotonic() - started > 30:
                raise
        time.sleep(0.05)


# The backoff is the gRPC channel's (core.Options.channel_args), the same in both clients: one run (CI time).
@pytest.mark.parametrize("clients", ["threads"], indirect=True)
def test_a_restarted_server_is_used_again_as_soon_as_it_is_ready(clients, slow_to_load):
    with serve(slow_to_load) as server:
        runner = clients.open(server.grpc_url, "echo", timeout=30)
        assert runner.run(input=REQUEST)["echo"].tolist() == [[b"again"]]
        kill_tritonserver(server.ports.grpc, group=False)
        failures, slowest = _failures_until_ready(runner, server)
        assert failures, "the server was killed, yet no request failed"
        assert slowest < FAILS_WITHIN_S, f"a request to the dead server took {slowest:.1f} s to fail"
        delay, attempts = _seconds_until_answered(runner)
    print(f"{failures} requests failed while the server was down (the slowest in {slowest:.3f} s); "
          f"answered {delay:.3f} s after readiness, at attempt {attempts}")
    assert delay < RECONNECTS_WITHIN_S, f"the client failed for {delay:.1f} s ({attempts} attempts) after readiness"


@contextmanager
def connections_to(port: int) -> Iterator[list[float]]:
    """Listen on ``port`` of 127.0.0.1 in place of the server, closing each connection at once;
    yields the times they came, as gRPC's reconnection attempts."""
    came: list[float] = []
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:  # the killed server's backend processes may hold its socket a moment longer
            try:
                listener.bind(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        listener.listen(16)
        listener.settimeout(0.1)
        done = threading.Event()

        def accept() -> None:
            while not done.is_set():
                try:
                    listener.accept()[0].close()
                    came.append(time.monotonic())
                except TimeoutError:
                    pass

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            yield came
        finally:
            done.set()
            thread.join()


def test_a_closed_client_stops_reconnecting(clients, echo_alone):
    """The short backoff makes a channel that outlives its client cost two connections a second:
    once closed, after failed requests whose errors are still held, the client's channel makes none."""
    with serve(echo_alone) as server:
        runner = clients.open(server.grpc_url, "echo", timeout=10)
        kill_tritonserver(server.ports.grpc)  # with its supervisor: nothing starts it again
        with connections_to(server.ports.grpc) as came:
            runner.async_run(input=REQUEST, input_id="lost")
            with pytest.raises(ServerUnreachable) as lost:  # kept: an error must not hold the channel
                runner.get(timeout=30)
            with pytest.raises(ServerUnreachable) as refused:
                runner.run(input=REQUEST)
            deadline = time.monotonic() + 5  # the channel may be in a backoff of its own after the kill
            while not came and time.monotonic() < deadline:
                time.sleep(0.05)
            assert came, "the client did not try to reconnect"
            runner.close()
            closed, after = time.monotonic(), len(came)
            time.sleep(2)
            late = [round(t - closed, 2) for t in came[after:]]
    assert not late, f"the closed client still connected, at {late} s after close ({lost.value}; {refused.value})"
