"""One client over two replicas: gRPC's round_robin spreads the requests, a replica killed with
SIGKILL mid-run costs no input_id, later requests go to the survivor, and a replica that comes
back on its address is used again."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest
import tritonclient.grpc as grpcclient

from client_harness import kill_tritonserver, one
from trtis.serving import ServerConfig, serve
from trt_client import client
from trt_client.errors import ServerUnreachable, TrtClientError

MODEL = "tiny-chain"
CLI = [sys.executable, "-m", "trt_client.cli"]
BEFORE, DURING, KILL_AT = 40, 200, 60  # requests before the kill; sent across it; the kill comes before this one


def served(url: str, model: str = MODEL) -> int:
    """How many requests the model answered successfully, from the server's statistics API."""
    with grpcclient.InferenceServerClient(url) as statistics:
        stats = statistics.get_inference_statistics(model, as_json=True)["model_stats"]
    return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats)


def across_a_kill(runner, request, first: int, kill) -> tuple[dict, set]:
    """Keep ``DURING`` requests going (as many in flight as the runner allows) and ``kill`` a
    replica before request ``first + KILL_AT``; returns each input_id's outcome ("ok" or its
    error), checked to come back exactly once, and the ids sent before the kill."""
    for i in range(first, first + DURING):
        if i == first + KILL_AT:
            kill()
        runner.async_run(input=request(i), input_id=i)
    outcomes: dict = {}
    for _ in range(DURING):
        try:
            input_id, _results = runner.get(timeout=60)
            outcome = "ok"
        except TrtClientError as error:
            input_id, outcome = error.input_id, error
        assert input_id is not None and input_id not in outcomes, f"input_id {input_id} came back twice: {outcome}"
        outcomes[input_id] = outcome
    assert sorted(outcomes) == list(range(first, first + DURING)), "an input_id was lost"
    return outcomes, set(range(first, first + KILL_AT))


# Balancing and the retry are the gRPC channel's, set by core.Options.channel_args for both clients
# alike: one run, with the threaded client (CI time).
@pytest.mark.parametrize("clients", ["threads"], indirect=True)
def test_two_replicas_balanced_one_killed_mid_run_then_back(clients, tiny, tmp_path):
    with ExitStack() as servers:
        a, b = (servers.enter_context(serve(tiny.root)) for _ in range(2))
        runner = clients.open([a.grpc_url, b.grpc_url], MODEL, max_in_flight=8, timeout=30)

        for i in range(BEFORE):
            runner.async_run(input=one(i % 10), input_id=i)
        assert sorted(runner.get(timeout=60)[0] for _ in range(BEFORE)) == list(range(BEFORE))
        files = [tmp_path / f"{n}.txt" for n in range(4)]
        for n, path in enumerate(files):
            path.write_text(str(n))
        command = subprocess.run([*CLI, "--url", a.grpc_url, "--url", b.grpc_url, "--model", MODEL, "--json",
                                  *map(str, files)],
                                 capture_output=True, text=True, timeout=120)
        assert command.returncode == 0 and len(json.loads(command.stdout)["results"]) == 4, command.stderr
        before = {"a": served(a.grpc_url), "b": served(b.grpc_url)}
        assert before["a"] > 0 and before["b"] > 0, f"round_robin sent everything to one replica: {before}"
        assert sum(before.values()) == BEFORE + len(files)

        outcomes, _ = across_a_kill(runner, lambda i: one(i % 10), BEFORE, lambda: kill_tritonserver(b.ports.grpc))
        failed = {i: str(e) for i, e in outcomes.items() if e != "ok"}
        assert not failed, f"retry_unavailable is on by default, yet requests failed: {failed}"
        assert served(a.grpc_url) - before["a"] >= DURING - KILL_AT, "the survivor did not take the later requests"

        b.stop()  # what the kill left: the HTTP front door (its own process group) holds two of b's ports
        with serve(tiny.root, ServerConfig(ports=b.ports)):  # the replica comes back on its address
            deadline, sent = time.monotonic() + 60, 0
            while served(b.grpc_url) == 0 and time.monotonic() < deadline:
                runner.run(input=one(sent % 10))
                sent += 1
            assert served(b.grpc_url) > 0, f"the replica that came back got none of {sent} requests"


def test_without_retries_only_requests_in_flight_on_the_killed_replica_fail(echo_repository):
    with serve(echo_repository) as a, serve(echo_repository) as b:
        with client.Inference([a.grpc_url, b.grpc_url], "slow-echo", max_in_flight=8, timeout=30,
                              retry_unavailable=False) as runner:
            # gRPC's round_robin drops a replica once its connection is seen closed, which happens
            # asynchronously: the pause lets it see that before the next request is sent (without it,
            # the first request after the kill could still go to the dead replica and fail).
            outcomes, sent_before_kill = across_a_kill(runner, lambda i: {"data": b"%d" % i}, 0,
                                                       lambda: (kill_tritonserver(b.ports.grpc), time.sleep(0.5)))
    failed = {i: e for i, e in outcomes.items() if e != "ok"}
    assert failed, "a replica was killed with requests in flight, yet none failed: was it retried?"
    assert set(failed) <= sent_before_kill, "requests sent after the kill failed"
    for error in failed.values():
        assert isinstance(error, ServerUnreachable) and "went away during the request" in str(error), error
