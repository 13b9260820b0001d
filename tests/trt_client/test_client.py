"""trt_client against the real embedded server (the tiny models' ensemble).

Every test that takes ``clients`` runs twice, with ``client.Inference`` (threads) and with
``aio.Inference`` (asyncio) driven the same way, so the two cannot drift apart.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from client_harness import Clients, one
from tiny_models import texts
from trtis.serving import serve
from trtis.serving.ports import free_port
from trt_client import client
from trt_client.errors import (InferenceFailed, InvalidInput, ModelNotReady, Overloaded, RequestTimeout,
                               ServerUnreachable, TooManyInFlight, TrtClientError)

MODEL = "tiny-chain"


@pytest.fixture
def runner(clients, tiny_server):
    return clients.open(tiny_server.grpc_url, MODEL, "1")


def test_metadata_and_health(runner):
    assert runner.server_live() and runner.server_ready() and runner.model_ready()
    assert [(t.name, t.datatype, t.shape) for t in runner.inputs] == [("text", "BYTES", (1,))]
    assert [(t.name, t.datatype, t.shape) for t in runner.outputs] == [("scores", "FP32", (2,))]
    assert runner.spec.max_batch_size == 8


def test_run_adds_the_batch_axis_and_matches_in_process(runner, tiny):
    results = runner.run(input=one(2.5))
    np.testing.assert_allclose(results["scores"], tiny.scores(texts(2.5)), rtol=1e-5, atol=1e-6)
    batch = runner.run(input={"text": texts(1, 2, 3)})
    np.testing.assert_allclose(batch["scores"], tiny.scores(texts(1, 2, 3)), rtol=1e-5, atol=1e-6)
    as_str = runner.run(input={"text": np.array(["2.5"])})
    np.testing.assert_array_equal(as_str["scores"], results["scores"])


def test_run_and_async_run_give_identical_results(runner):
    values = [0.5 * i for i in range(20)]
    blocking = [runner.run(input=one(v))["scores"] for v in values]
    for i, value in enumerate(values):
        assert runner.async_run(input=one(value), input_id=f"image_{i}") == f"image_{i}"
    answers = dict(runner.get(block=True) for _ in values)
    assert sorted(answers) == sorted(f"image_{i}" for i in range(len(values)))
    for i, scores in enumerate(blocking):
        np.testing.assert_array_equal(answers[f"image_{i}"]["scores"], scores)


def test_many_requests_with_a_small_bound_and_one_refused_come_back_exactly_once(clients, tiny_server):
    runner = clients.open(tiny_server.grpc_url, MODEL, max_in_flight=3)
    for i in range(300):
        runner.async_run(input=one("abc" if i == 150 else i % 50), input_id=i)
        assert runner.in_flight <= 3
    seen, errors = [], []
    for _ in range(300):
        try:
            seen.append(runner.get(timeout=60)[0])
        except InvalidInput as error:  # the model refuses a text that is not a number: INVALID_ARGUMENT
            errors.append(error.input_id)
    assert runner.peak_in_flight <= 3
    assert errors == [150]
    assert sorted(seen + errors) == list(range(300)), "an input_id was lost or duplicated"


def test_a_bad_request_among_good_ones_fails_alone_with_its_input_id(runner, tiny):
    ids = [runner.async_run(input=one(v)) for v in (1, 2, "abc", 4, 5)]
    outcomes = {}
    for _ in ids:
        try:
            input_id, results = runner.get()
            outcomes[input_id] = results["scores"]
        except InvalidInput as error:
            outcomes[error.input_id] = error
    bad = outcomes.pop(ids[2])
    assert isinstance(bad, InvalidInput) and "refused the request" in str(bad) and "abc" in str(bad)
    assert sorted(outcomes) == [ids[0], ids[1], ids[3], ids[4]]
    np.testing.assert_allclose(outcomes[ids[4]], tiny.scores(texts(5)), rtol=1e-5, atol=1e-6)


def test_get_without_waiting_and_with_a_timeout(runner):
    assert runner.get(block=False) is None
    with pytest.raises(TrtClientError, match="no request in flight"):
        runner.get(block=True)
    runner.async_run(input=one(1), input_id="slow")
    with pytest.raises(RequestTimeout):
        runner.get(block=True, timeout=0.001)  # the chain's three batchers wait 20 ms each
    assert runner.get(block=True, timeout=30)[0] == "slow"


def test_bound_reached_raises_when_asked_to(clients, tiny_server):
    runner = clients.open(tiny_server.grpc_url, MODEL, max_in_flight=1, when_full="raise")
    runner.async_run(input=one(1), input_id="a")
    with pytest.raises(TooManyInFlight) as error:
        runner.async_run(input=one(2), input_id="b")
    assert error.value.input_id == "b"
    assert runner.get(timeout=30)[0] == "a"


def test_duplicate_outstanding_input_id_is_refused(runner):
    runner.async_run(input=one(1), input_id="same")
    with pytest.raises(InvalidInput, match="already in use"):
        runner.async_run(input=one(1), input_id="same")
    runner.get(timeout=30)


def test_per_request_timeout(clients, tiny_server):
    runner = clients.open(tiny_server.grpc_url, MODEL, timeout=0.005)
    with pytest.raises(RequestTimeout, match="timed out"):
        runner.run(input=one(1))


@pytest.mark.parametrize("name, version, expected", [
    ("no-such-model", "", "not ready"), (MODEL, "7", "version 7 is not ready")])
def test_wrong_model_or_version(clients, tiny_server, name, version, expected):
    with pytest.raises(ModelNotReady, match=expected) as error:
        clients.open(tiny_server.grpc_url, name, version)
    assert MODEL in str(error.value), "the message lists the models the server has"


@pytest.mark.parametrize("inputs, expected", [
    ({"txet": np.array([b"1"])}, "has no input 'txet'; its inputs are: text"),
    ({}, "needs input 'text'"),
    ({"text": np.ones(1, np.float64)}, "is BYTES, got FP64"),
    ({"text": np.array([[b"1", b"2"]], dtype=object)}, r"shape \[1, 2\], expected \[-1, 1\]"),
    ({"text": texts(*range(9))}, "exceeds the model's max_batch_size 8"),
    ({"text": np.array([1, b"x"], dtype=object)}, "object array holding int"),
])
def test_invalid_inputs_are_refused_before_sending(runner, inputs, expected):
    with pytest.raises(InvalidInput, match=expected):
        runner.run(input=inputs)
    with pytest.raises(InvalidInput, match=expected):
        runner.async_run(input=inputs)
    assert runner.get(block=False) is None


def test_no_server_is_a_clear_error_after_bounded_retries(clients):
    with pytest.raises(ServerUnreachable, match="start it with ./start.sh"):
        clients.open(f"127.0.0.1:{free_port()}", MODEL, connect_attempts=2, retry_interval=0.1)


def test_server_stopped_mid_run_loses_no_input_id(clients, echo_repository):
    with serve(echo_repository) as server:
        runner = clients.open(server.grpc_url, "echo", timeout=20, max_in_flight=8)
        stopper = threading.Thread(target=server.stop)
        for i in range(200):
            runner.async_run(input={"data": b"%d" % i}, input_id=i)
            if i == 20:
                stopper.start()
        stopper.join()
        seen, failures = set(), []
        for _ in range(200):
            try:
                seen.add(runner.get(block=True, timeout=30)[0])
            except (RequestTimeout, ServerUnreachable, ModelNotReady, InferenceFailed) as error:
                assert error.input_id is not None, error
                seen.add(error.input_id)
                failures.append(error)
        assert seen == set(range(200))
        assert failures, "the server was stopped, yet every request succeeded"
        with pytest.raises(ServerUnreachable):
            runner.run(input={"data": b"1"})


def test_close_waits_for_requests_in_flight_keeps_their_results_then_refuses(clients, tiny_server):
    runner = clients.open(tiny_server.grpc_url, MODEL)
    for i in range(10):
        runner.async_run(input=one(i), input_id=i)
    runner.close()
    assert runner.in_flight == 0
    assert sorted(runner.get(block=False)[0] for _ in range(10)) == list(range(10))
    for call in (lambda: runner.run(input=one(1)), lambda: runner.async_run(input=one(1)), runner.model_ready):
        with pytest.raises(TrtClientError, match="this Inference is closed"):
            call()
    runner.close()


# Where the two clients truly differ -----------------------------------------------------------
def test_threads_a_thousand_requests_collected_by_another_thread(tiny_server):
    count, bound = 1000, 4
    received: list = []
    with client.Inference(tiny_server.grpc_url, MODEL, max_in_flight=bound) as runner:
        def collect():
            for _ in range(count):
                received.append(runner.get(block=True, timeout=60)[0])
        collector = threading.Thread(target=collect)
        collector.start()
        for i in range(count):
            runner.async_run(input=one(i % 50), input_id=i)
            assert runner.in_flight <= bound
        collector.join(timeout=120)
        assert not collector.is_alive(), "results stopped coming back"
        assert runner.peak_in_flight <= bound
    assert sorted(received) == list(range(count)), "an input_id was lost or duplicated"


def test_asyncio_requests_before_connect_are_refused(tiny_server):
    clients = Clients("asyncio")
    try:
        runner = clients.unconnected(tiny_server.grpc_url, MODEL)
        with pytest.raises(TrtClientError, match="await connect"):
            runner.run(input=one(1))
        runner.connect()
        assert runner.run(input=one(1))["scores"].shape == (1, 2)
        runner.close()
        with pytest.raises(TrtClientError, match="this Inference is closed"):
            runner.connect()
    finally:
        clients.finish()


def test_a_full_queue_is_overloaded_not_unreachable(clients, echo_server):
    runner = clients.open(echo_server.grpc_url, "queue-of-one", max_in_flight=6)
    for i in range(6):
        runner.async_run(input={"data": b"x"}, input_id=i)
    outcomes = {}
    for _ in range(6):
        try:
            outcomes[runner.get(timeout=30)[0]] = "ok"
        except Overloaded as error:
            assert "queue is full" in str(error) and "max_in_flight" in str(error)
            outcomes[error.input_id] = "overloaded"
    assert sorted(outcomes) == list(range(6))
    assert "ok" in outcomes.values() and "overloaded" in outcomes.values(), outcomes
