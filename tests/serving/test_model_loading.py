"""Models the embedded server cannot load: start.sh fails and shows the backend's reason."""
from __future__ import annotations

import copy
import numpy as np
import pytest

from servers import start_script
from trtis import config, repository


def start_failure(tmp_path, model: repository.Model) -> str:
    repository.write_repository(tmp_path / "repo", [model])
    result = start_script(tmp_path / "repo", tmp_path / "state").start("--timeout", "120")
    assert result.returncode != 0, "the server started although a model cannot load"
    return result.stderr


def test_config_names_missing_from_the_model_fail_the_load_by_name(tmp_path, tiny):
    wrong = config.model_config("wrong-names", platform="onnxruntime_onnx", max_batch_size=4,
                                inputs=[config.Tensor("feature", np.float32, [2])],
                                outputs=[config.Tensor("hidden", np.float32, [3])])
    message = start_failure(tmp_path, repository.Model(wrong, tiny.onnx_bytes))
    assert "has no tensors ['feature']" in message and "wrong-names" in message


def test_a_tensorrt_plan_without_tensorrt_fails_to_load_with_the_reason(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: this checks the message on hosts without it")
    except ImportError:
        pass
    plan = config.model_config("plan", platform="tensorrt_plan", max_batch_size=4,
                               inputs=[config.Tensor("x", np.float32, [2])], outputs=[config.Tensor("y", np.float32, [2])],
                               instances=[config.Instances(kind="cpu")])
    message = start_failure(tmp_path, repository.Model(plan, b"not a plan"))
    assert "the tensorrt backend needs the TensorRT and cuda-python" in message


def test_torchscript_runs_on_the_gpu_of_its_instance_group(tmp_path, tiny):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (torch.cuda.is_available() is False here)")
    import io

    import tritonclient.grpc as grpcclient

    from trtis.serving import serve

    buffer = io.BytesIO()
    torch.jit.save(tiny.head, buffer)
    gpu_head = config.model_config("gpu-head", platform="pytorch_libtorch", max_batch_size=4,
                                   inputs=[config.Tensor("hidden", np.float32, [3])],
                                   outputs=[config.Tensor("scores", np.float32, [2])],
                                   instances=[config.Instances(kind="gpu", gpus=[0])])
    repository.write_repository(tmp_path / "repo", [repository.Model(gpu_head, buffer.getvalue())])
    hidden = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    with serve(tmp_path / "repo") as server:
        tensor = grpcclient.InferInput("hidden", [2, 3], "FP32")
        tensor.set_data_from_numpy(hidden)
        scores = grpcclient.InferenceServerClient(server.grpc_url).infer("gpu-head", [tensor]).as_numpy("scores")
    with torch.inference_mode():
        np.testing.assert_allclose(scores, tiny.head(torch.from_numpy(hidden)).numpy(), rtol=1e-4, atol=1e-5)


def test_warmup_runs_before_the_server_reports_ready(tmp_path):
    """A model that refuses all-zero input cannot pass its warm-up on zeros: the load fails, with
    the model's own words, so the warm-up really ran through the backend."""
    import io

    import torch

    class ZeroAverse(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x == 0).all()):
                raise RuntimeError("refusing an all-zero input")
            return x * 2

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(ZeroAverse()), buffer)
    warmed = config.model_config("zero-averse", platform="pytorch_libtorch", max_batch_size=4,
                                 inputs=[config.Tensor("x", np.float32, [3])],
                                 outputs=[config.Tensor("y", np.float32, [3])], warmup_batch_sizes=[1, 4])
    message = start_failure(tmp_path, repository.Model(warmed, buffer.getvalue()))
    assert "refusing an all-zero input" in message and "zero-averse" in message


def test_start_sh_names_the_model_that_did_not_load_among_others_and_triton_s_reason(tmp_path, echo_model):
    """One corrupt model.onnx among several models: the reason is deep in the log, not in its last lines."""
    others = [repository.Model(copy.deepcopy(echo_model.config), echo_model.artefact) for _ in range(4)]
    for index, other in enumerate(others):
        other.config.name = f"echo-{index}"
    broken = config.model_config("broken", platform="onnxruntime_onnx", max_batch_size=4,
                                 inputs=[config.Tensor("x", np.float32, [2])], outputs=[config.Tensor("y", np.float32, [2])])
    repository.write_repository(tmp_path / "repo", [*others, repository.Model(broken, b"corrupt bytes")])
    result = start_script(tmp_path / "repo", tmp_path / "state").start("--timeout", "120")
    assert result.returncode == 1
    assert "model 'broken' (version 1) did not load: " in result.stderr and "INVALID_PROTOBUF" in result.stderr
    assert f"(the whole log: {tmp_path / 'state' / 'tritonserver.log'})" in result.stderr
    assert "stale state file" not in result.stderr, "its own failed start is no stale state"
