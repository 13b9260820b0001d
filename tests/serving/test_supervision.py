"""A dead backend process heals itself: ``kill -9`` of each kind of stub (and of tritonserver) under
load. Every request comes back (a result or an error naming its input_id), readiness says no while
the server is broken, the supervisor restarts it, and none of the old processes outlives it."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tiny_models import build, texts
from trt_client.client import Inference
from trt_client.errors import TrtClientError
from trtis import repository
from trtis.serving import health, process, serve, state_folder

# A model of each backend kind the project serves with: instances of it die one at a time here.
KINDS = {"tensorflow": "tiny-text", "onnxruntime": "tiny-affine", "pytorch": "tiny-head", "python": "echo"}
RECOVERY_BOUND_S = 30


@pytest.fixture(scope="module")
def kinds(echo_model, tmp_path_factory):
    tiny = build(tmp_path_factory.mktemp("kinds_repository"))
    repository.write_repository(tiny.root, [echo_model])
    return tiny


@pytest.fixture(scope="module")
def server(kinds, tmp_path_factory):
    with serve(kinds.root, state_dir=tmp_path_factory.mktemp("supervised")) as server:
        yield server


def state(server) -> dict:
    return json.loads((server.state_dir / state_folder.STATE_FILE).read_text())


def stubs(server) -> dict[int, str]:
    return process.stubs(state(server)["shm_prefix"])


def ready(server) -> bool:
    return health.ready(f"http://{server.http_url}/v2/health/ready", timeout=1)


class Readiness(threading.Thread):
    """What /v2/health/ready answers, every 0.1 s, from now until stopped."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.samples, self.done = server, [], threading.Event()

    def run(self):
        while not self.done.wait(0.1):
            self.samples.append((time.monotonic(), ready(self.server)))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def healed(samples: list, harmed_at: float) -> float | None:
    """When readiness said yes again after saying no, once harmed (None: not yet)."""
    down = next((t for t, ok in samples if t > harmed_at and not ok), None)
    return None if down is None else next((t for t, ok in samples if t > down and ok), None)


def restarted(server, restarts: int) -> bool:
    """The supervisor has restarted the server since it had counted ``restarts``, and it is ready.
    (A readiness probe can time out on a loaded machine: a no from it alone is not the restart.)"""
    now = state(server)
    return now["restarts"] > restarts and now["status"] == "ready"


def load_through(server, kinds, harm, successes_after_healed: int = 20) -> tuple[dict, list, float]:
    """Keep 8 requests in flight on the ensemble, ``harm()`` the server after 20, and go on until
    the supervisor has restarted it, it has answered ready again and served a run of requests (the
    client's channel reconnects with a backoff). Returns each input_id's outcome, the readiness
    samples, when the harm was done."""
    outcomes: dict = {}
    restarts = state(server)["restarts"]
    with Inference(server.grpc_url, kinds.ensemble, timeout=60, max_in_flight=8, retry_unavailable=False) as runner, \
            Readiness(server) as readiness:
        harmed_at, healed_at, sent = None, None, 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (healed_at and succeeded_lately(outcomes, successes_after_healed)):
            if sent == 20:
                harmed_at = time.monotonic()
                harm()
            runner.async_run(input={"text": texts(sent)}, input_id=sent)
            sent += 1
            if sent > 8:
                collect(runner, outcomes)
            if harmed_at is not None and healed_at is None and restarted(server, restarts):
                healed_at = healed(list(readiness.samples), harmed_at)
            time.sleep(0.02)
        while len(outcomes) < sent:
            collect(runner, outcomes)
    return outcomes, readiness.samples, harmed_at


def succeeded_lately(outcomes: dict, count: int) -> bool:
    last = list(outcomes.values())[-count:]
    return len(last) == count and not any(isinstance(outcome, Exception) for outcome in last)


def collect(runner, outcomes: dict) -> None:
    try:
        input_id, results = runner.get(block=True, timeout=120)
        outcomes[input_id] = results["scores"]
    except TrtClientError as error:
        assert error.input_id is not None, error
        outcomes[error.input_id] = error


def check_recovery(server, kinds, outcomes: dict, samples: list, harmed_at: float, old: dict[int, str]) -> None:
    assert sorted(outcomes) == list(range(len(outcomes))), "an input_id was lost"
    failed = [i for i, outcome in outcomes.items() if isinstance(outcome, Exception)]
    assert failed, "the server was harmed, yet every request succeeded"
    back = healed(samples, harmed_at)
    assert back is not None, "readiness did not say no while broken, then yes again"
    late = [i for i, outcome in outcomes.items() if i > max(failed)]
    assert late, "no request succeeded after the recovery"
    for i in late:
        np.testing.assert_allclose(outcomes[i], kinds.scores(texts(i)), rtol=1e-5, atol=1e-6)
    print(f"ready again {back - harmed_at:.1f} s after the harm ({state(server)['recoveries'][-1]['down_s']} s "
          f"restarting); {len(failed)} of {len(outcomes)} requests failed")
    assert back - harmed_at < RECOVERY_BOUND_S, "no recovery within the documented bound"
    assert not any(process.identify(pid) for pid in old), "a process of the broken server outlived it"
    assert sorted(stubs(server).values()) == sorted(old.values()), "not every instance is back"


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_backend_process_is_replaced_and_no_request_is_lost(server, kinds, kind):
    old = stubs(server)
    victim = next(pid for pid, instance in old.items() if instance.startswith(KINDS[kind] + "_"))

    def kill():
        os.kill(victim, signal.SIGKILL)
        while process.state(victim) not in ("Z", None):
            time.sleep(0.01)
        assert state_folder.health(server.state_dir, server.host, server.ports.http) is not None, \
            "the health check passed while a backend process was dead"

    outcomes, samples, killed_at = load_through(server, kinds, kill)
    check_recovery(server, kinds, outcomes, samples, killed_at, old)
    assert f"{old[victim]} (pid {victim})" in server.log_file.read_text(errors="replace"), "the log does not say which died"
    assert state_folder.health(server.state_dir, server.host, server.ports.http) is None


def test_a_killed_server_is_restarted_and_leaves_no_orphan(server, kinds):
    old = stubs(server)
    prefix = state(server)["shm_prefix"]
    outcomes, samples, killed_at = load_through(server, kinds, lambda: os.kill(state(server)["server"]["pid"], signal.SIGKILL))
    check_recovery(server, kinds, outcomes, samples, killed_at, old)
    regions = [p.name for p in Path("/dev/shm").glob(f"{prefix}*")]
    assert len(regions) == len(stubs(server)), f"shared memory of the killed server is left: {regions}"


def test_the_probe_checks_readiness_and_finds_the_server_by_name_in_a_container(server):
    assert urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready").status == 200
    assert state(server)["server"]["pid"] in process.named("tritonserver")
    assert "does not answer ready" in health.probe("http://127.0.0.1:9/v2/health/ready")


def test_a_stopped_backend_process_turns_readiness_false_and_is_healed(server, kinds):
    """SIGSTOP leaves the process alive and Triton's readiness at 200: the supervisor sees it stopped."""
    old = stubs(server)
    victim = next(pid for pid, instance in old.items() if instance.startswith(KINDS["onnxruntime"] + "_"))
    outcomes, samples, stopped_at = load_through(server, kinds, lambda: os.kill(victim, signal.SIGSTOP))
    check_recovery(server, kinds, outcomes, samples, stopped_at, old)
    down = next(t for t, ok in samples if t > stopped_at and not ok)
    print(f"readiness said no {down - stopped_at:.1f} s after SIGSTOP")
    assert down - stopped_at < 5, "readiness stayed yes for 5 s with a stopped backend process"
    assert f"{old[victim]} (pid {victim}) stopped" in server.log_file.read_text(errors="replace")
