"""A burst against a model with a bounded queue (``config.DynamicBatching``): what the queue cannot
hold is refused at once as Overloaded, what waited past its timeout is refused too, nothing hangs,
the server's memory stays bounded, and the next ordinary request is answered."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from trtis import config, repository
from trtis.serving import process, serve, state_folder
from trtis.repository import read_configs
from trtis.serving.burst import send_all, without_queue_bounds

SLOW = b'''import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.3)  # one batch at a time: the queue fills behind it
        return [pb_utils.InferenceResponse([pb_utils.Tensor("size", pb_utils.get_input_tensor_by_name(r, "data")
                                                            .as_numpy()[:, :1])]) for r in requests]
'''
MAX_BATCH, QUEUE = 2, 4
ELEMENTS = 1 << 20  # 4 MB a request


def slow_model(name: str, queue_timeout_us: int) -> repository.Model:
    model = config.model_config(
        name, backend="python", max_batch_size=MAX_BATCH,
        inputs=[config.Tensor("data", np.float32, [ELEMENTS])], outputs=[config.Tensor("size", np.float32, [1])],
        dynamic_batching=config.DynamicBatching(max_queue_size=QUEUE, queue_timeout_us=queue_timeout_us))
    return repository.Model(model, SLOW)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("burst_repository")
    repository.write_repository(root, [slow_model("slow", 60_000_000), slow_model("slow-short-wait", 500_000)])
    with serve(root, state_dir=tmp_path_factory.mktemp("burst_state")) as running:
        yield running


def request() -> dict[str, np.ndarray]:
    return {"data": np.ones((1, ELEMENTS), np.float32)}


def server_memory(running) -> int:
    state = json.loads((running.state_dir / state_folder.STATE_FILE).read_text())
    return process.rss_bytes(state["server"]["pid"])


def test_what_the_queue_cannot_hold_is_refused_as_overloaded_and_the_server_goes_on(server):
    send_all(server.grpc_url, "slow", [request()])  # the first request's buffers
    before = server_memory(server)
    answers = send_all(server.grpc_url, "slow", [request() for _ in range(40)])
    outcomes = [outcome for _, outcome, _ in answers]
    assert len(answers) == 40 and set(outcomes) <= {"ok", "Overloaded"}
    # At most a batch in execution and a full queue are taken (a batch may leave the queue as the burst arrives).
    assert 0 < outcomes.count("ok") <= 3 * MAX_BATCH + QUEUE
    assert any("maximum queue size" in message for _, outcome, message in answers if outcome == "Overloaded")
    assert [outcome for _, outcome, _ in send_all(server.grpc_url, "slow", [request()])] == ["ok"]
    assert server_memory(server) - before < 300 * 2 ** 20  # 40 requests of 4 MB: refused ones are not kept


def test_over_http_through_the_front_door_a_full_queue_is_503(server):
    def one(answers: list) -> None:
        client = triton_http.InferenceServerClient(server.http_url)
        data = triton_http.InferInput("data", [1, ELEMENTS], "FP32")
        data.set_data_from_numpy(request()["data"])
        try:
            client.infer("slow", [data])
            answers.append("ok")
        except InferenceServerException as error:
            answers.append(f"{error.status()} {error.message()}")
        finally:
            client.close()

    answers: list[str] = []
    threads = [threading.Thread(target=one, args=(answers,)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [a for a in answers if a != "ok"]
    assert len(answers) == 20 and refused and all(a.startswith("503 ") and "maximum queue size" in a for a in refused)


def test_a_request_that_waited_past_the_queue_timeout_is_refused_not_run_late(server):
    answers = send_all(server.grpc_url, "slow-short-wait", [request() for _ in range(QUEUE + MAX_BATCH)])
    assert {outcome for _, outcome, _ in answers} <= {"ok", "Overloaded"}, answers
    # 0.5 s in the queue behind batches of 0.3 s: the last ones wait longer (a batch may start late and
    # leave one request a full queue).
    assert any(message == "Request timeout expired" for _, _, message in answers), answers


def test_the_baseline_copy_queues_without_end_and_leaves_the_repository_as_it_was(tmp_path):
    repository.write_repository(tmp_path / "bounded", [slow_model("slow", 60_000_000)])
    copy = without_queue_bounds(tmp_path / "bounded", tmp_path / "copy")
    assert not read_configs(copy)["slow"].dynamic_batching.HasField("default_queue_policy")
    assert read_configs(tmp_path / "bounded")["slow"].dynamic_batching.default_queue_policy.max_queue_size == QUEUE
