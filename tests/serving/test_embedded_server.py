"""The real embedded Triton server, started by start.sh, serving tiny real models."""
from __future__ import annotations

import subprocess
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from servers import START, listening, start_script
from tiny_models import texts


def grpc_text_input(values: np.ndarray, name: str = "text", datatype: str = "BYTES"):
    tensor = grpcclient.InferInput(name, list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    return tensor


@pytest.fixture(scope="module")
def grpc(tiny_server):
    return grpcclient.InferenceServerClient(tiny_server.grpc_url)


def test_all_models_are_ready(grpc, tiny):
    assert grpc.is_server_ready()
    for name in ("tiny-text", "tiny-affine", "tiny-head", "tiny-chain"):
        assert grpc.is_model_ready(name), name


def test_ensemble_over_grpc_equals_the_models_in_process(grpc, tiny):
    values = texts(1.5, -2, 40, 0.25)
    result = grpc.infer("tiny-chain", [grpc_text_input(values)])
    np.testing.assert_allclose(result.as_numpy("scores"), tiny.scores(values), rtol=1e-5, atol=1e-6)


def test_each_backend_over_http_equals_in_process(tiny_server, tiny):
    client = httpclient.InferenceServerClient(tiny_server.http_url)
    values = texts(3, 7.5)
    text_input = httpclient.InferInput("text", [2, 1], "BYTES")
    text_input.set_data_from_numpy(values)
    features = client.infer("tiny-text", [text_input]).as_numpy("features")
    np.testing.assert_array_equal(features, tiny.features(values))
    features_input = httpclient.InferInput("features", list(features.shape), "FP32")
    features_input.set_data_from_numpy(features)
    hidden = client.infer("tiny-affine", [features_input]).as_numpy("hidden")
    np.testing.assert_allclose(hidden, tiny.hidden(features), rtol=1e-6)
    hidden_input = httpclient.InferInput("hidden", list(hidden.shape), "FP32")
    hidden_input.set_data_from_numpy(hidden)
    scores = client.infer("tiny-head", [hidden_input]).as_numpy("scores")
    np.testing.assert_allclose(scores, tiny.scores(values), rtol=1e-5, atol=1e-6)


def infer_concurrently(grpc, values: list[str], model: str = "tiny-chain"):
    """Send every request before waiting for any, so that the server can batch them."""
    results: list = [None] * len(values)
    done = threading.Semaphore(0)

    def callback(index):
        def finish(result, error):
            results[index] = error if error is not None else result.as_numpy("scores")
            done.release()
        return finish

    for index, value in enumerate(values):
        grpc.async_infer(model, [grpc_text_input(texts(value))], callback(index))
    for _ in values:
        assert done.acquire(timeout=60), "a request never came back"
    return results


def model_counts(grpc, model: str) -> tuple[int, int]:
    stats = grpc.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_concurrent_requests_are_batched_dynamically(grpc, tiny):
    before = {m: model_counts(grpc, m) for m in ("tiny-text", "tiny-affine", "tiny-head")}
    values = [str(i) for i in range(48)]
    results = infer_concurrently(grpc, values)
    for value, scores in zip(values, results):
        np.testing.assert_allclose(scores, tiny.scores(texts(value)), rtol=1e-5, atol=1e-6)
    for model, (inferences, executions) in before.items():
        after_inferences, after_executions = model_counts(grpc, model)
        assert after_inferences - inferences == len(values), model
        assert after_executions - executions < len(values), f"{model} ran every request alone: no batching"


def test_a_bad_request_in_a_batch_fails_alone(grpc, tiny):
    values = [str(i) for i in range(15)] + ["not-a-number"]
    results = infer_concurrently(grpc, values)
    assert isinstance(results[-1], InferenceServerException)
    assert "model 'tiny-text'" in results[-1].message() and "not-a-number" in results[-1].message()
    for value, scores in zip(values[:-1], results[:-1]):
        np.testing.assert_allclose(scores, tiny.scores(texts(value)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make_input, model, expected", [
    (lambda: grpc_text_input(texts(1), name="txet"), "tiny-chain", "unexpected inference input 'txet'"),
    (lambda: grpc_text_input(np.ones((1, 1), np.float32), datatype="FP32"), "tiny-chain", "data-type"),
    (lambda: grpc_text_input(np.array([[b"1", b"2"]], dtype=object)), "tiny-chain", "shape"),
    (lambda: grpc_text_input(texts(*range(9))), "tiny-chain", "batch-size must be <= 8"),
    (lambda: grpc_text_input(texts(1)), "no-such-model", "unknown model"),
])
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(grpc, tiny, make_input, model, expected):
    with pytest.raises(InferenceServerException) as error:
        grpc.infer(model, [make_input()])
    assert expected in error.value.message()
    result = grpc.infer("tiny-chain", [grpc_text_input(texts(2))])
    np.testing.assert_allclose(result.as_numpy("scores"), tiny.scores(texts(2)), rtol=1e-5, atol=1e-6)


def test_start_refuses_a_second_server_and_busy_ports(tiny_server, tiny, tmp_path):
    again = start_script(tiny.root, tiny_server.state_dir).start()
    assert again.returncode != 0 and "still running" in again.stderr
    other = start_script(tiny.root, tmp_path)
    other.grpc = tiny_server.ports.grpc
    busy = other.start()
    assert busy.returncode != 0 and f"grpc {tiny_server.ports.grpc}" in busy.stderr


def test_health_asks_the_recorded_ports_and_stop_frees_them(tiny, tmp_path):
    server = start_script(tiny.root, tmp_path)
    assert server.start().returncode == 0
    ports = [server.http, server.grpc, server.metrics]
    assert all(listening(port) for port in ports)
    # --health with the state folder alone asks the ports this server was started on, not 7000.
    health = subprocess.run([str(START), "--health", "--state-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert health.returncode == 0 and health.stdout.strip() == "healthy", health.stdout + health.stderr
    stopped = server.stop()
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not any(listening(port) for port in ports)
    assert not (tmp_path / "tritonserver.pid").exists()


def test_serve_runs_a_server_for_a_with_block(tiny, tmp_path):
    from trtis.serving import serve

    with serve(tiny.root, state_dir=tmp_path) as server:
        ports = [server.ports.http, server.ports.grpc, server.ports.metrics]
        assert all(listening(port) for port in ports)
        assert grpcclient.InferenceServerClient(server.grpc_url).is_server_ready()
    assert not any(listening(port) for port in ports)


def test_serve_raises_a_library_error_with_the_log_when_the_server_cannot_start(tmp_path):
    from trtis import config, repository
    from trtis.serving import LaunchError, ServerConfig, serve

    broken = config.model_config("broken", platform="onnxruntime_onnx", max_batch_size=1,
                                 inputs=[config.Tensor("x", np.float32, [1])], outputs=[config.Tensor("y", np.float32, [1])])
    repository.write_repository(tmp_path / "repo", [repository.Model(broken, b"not onnx")])
    with pytest.raises(LaunchError, match="broken"):
        with serve(tmp_path / "repo", ServerConfig(timeout=120)):
            pass


def test_missing_repository_is_refused(tmp_path):
    result = start_script(tmp_path / "nowhere", tmp_path).start()
    assert result.returncode != 0 and "does not exist" in result.stderr
