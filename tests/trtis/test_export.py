"""trtis.export on a small model of its own (not CenterNet): every CPU format, validated early, served."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trtis import export, repository, verify
from trtis.export import onnx as trtis_onnx
from trtis.export import tensorrt
from trtis.serving import serve


class Classifier(torch.nn.Module):
    """A small image classifier: conv, pool, linear; two outputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 4)

    def forward(self, image):
        pooled = self.features(image).mean(dim=(2, 3))
        logits = self.head(pooled)
        return logits, torch.softmax(logits, dim=1)


def images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(count, 3, 16, 16)).astype(np.float32))


CALIBRATION = [{"image": images(4, seed).numpy()} for seed in range(1, 5)]


@pytest.mark.parametrize("fmt", ["onnx", "onnx-int8", "torchscript", "auto"])
def test_each_cpu_format_is_built_checked_and_configured(fmt):
    exported = export.export(Classifier(), [images(2)], ["image"], ["logits", "probabilities"], fmt,
                             name="classifier", max_batch_size=4, calibration=CALIBRATION)
    assert exported.kind == "cpu" and exported.format in export.FORMATS
    config = exported.model.config
    assert {"platform": config.platform} == export.FORMATS[exported.format].serves
    assert [list(t.dims) for t in config.input] == [[3, 16, 16]] and [list(t.dims) for t in config.output] == [[4], [4]]
    assert not config.model_warmup, "CPU models are not warmed up"
    stages = {row.stage for row in exported.comparisons}
    assert all(row.ok for row in exported.comparisons) and stages
    if exported.format.startswith("onnx"):
        assert "classifier: PyTorch vs ONNX" in stages and "classifier: ONNX vs simplified" in stages
    if exported.format == "onnx-int8":
        assert "classifier: ONNX vs INT8 ONNX (cpu form)" in stages
    if fmt == "auto":
        assert any(note.startswith("auto: ") for note in exported.notes)


def test_the_compiled_format_is_compiled_checked_and_served_with_its_inductor_cache(tmp_path):
    """On the CPU the compiled format runs FP32 through inductor's C++ code generation; on a GPU the
    same path runs FP16 and channels-last (measured on the device, see docs/performance)."""
    module = Classifier().eval()
    exported = export.export(module, [images(2)], ["image"], ["logits", "probabilities"], "compiled",
                             name="classifier-compiled", max_batch_size=4, cache_dir=tmp_path / "cache")
    assert exported.model.config.backend == "torch_compile" and "classifier-compiled: PyTorch vs compiled" in {
        row.stage for row in exported.comparisons}
    assert any((tmp_path / "cache").rglob("*")), "the check filled the inductor cache that ships with the model"
    repository.write_repository(tmp_path / "repo", [exported.model])
    assert (tmp_path / "repo" / "classifier-compiled" / "1" / "inductor-cache").is_dir()
    from trtis import runtimes

    padded = runtimes.load(tmp_path / "repo" / "classifier-compiled", exported.model.config,
                           parameters={"batch_buckets": "2,4"})  # what a GPU config carries (config.batch_buckets)
    with torch.inference_mode():
        np.testing.assert_allclose(padded.run({"image": images(3).numpy()})["probabilities"],
                                   module(images(3))[1].numpy(), atol=1e-5)
    import tritonclient.grpc as grpcclient

    batch = images(3, seed=5)
    with torch.inference_mode():
        expected = module(batch)[1].numpy()
    with serve(tmp_path / "repo") as server:
        tensor = grpcclient.InferInput("image", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch.numpy())
        served = grpcclient.InferenceServerClient(server.grpc_url).infer("classifier-compiled", [tensor])
    np.testing.assert_allclose(served.as_numpy("probabilities"), expected, atol=1e-5)


def test_a_step_over_its_tolerance_fails_naming_it():
    strict = lambda stage, reference, candidate: verify.compare(stage, reference, candidate, 0.0)  # noqa: E731
    with pytest.raises(verify.VerificationError, match="classifier: ONNX vs INT8 ONNX"):
        export.export(Classifier(), [images(2)], ["image"], ["logits", "probabilities"], "onnx-int8",
                      name="classifier", calibration=CALIBRATION, compare_reduced=strict)


@pytest.mark.parametrize("fmt, options, message", [
    ("onnx", {"gpus": [0]}, "the onnx format runs on the CPU"),
    ("onnx-int8", {}, "pass calibration feeds"),
    ("onnx", {"calibration_method": "kl"}, "calibration method 'kl'"),
    ("onnx", {"max_batch_size": -1}, r"max_batch_size must be 0 \(no batch axis\) or more"),
    ("savedmodel", {}, "unknown network format 'savedmodel'"),
])
def test_options_are_refused_before_any_work(fmt, options, message, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("export work started before the options were checked")

    monkeypatch.setattr(trtis_onnx, "export", no_work)
    with pytest.raises(ValueError, match=message):
        export.export(Classifier(), [images(2)], ["image"], ["logits", "probabilities"], fmt, name="classifier",
                      **options)


def test_tensorrt_is_refused_before_any_work_where_it_cannot_be_built():
    reason = tensorrt.available()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present here")
    with pytest.raises(tensorrt.TensorRTUnavailable, match="the tensorrt format cannot be built here"):
        export.export(Classifier(), [images(2)], ["image"], ["logits", "probabilities"], "tensorrt",
                      name="classifier", calibration=CALIBRATION)


def test_the_exported_formats_serve_what_the_module_computes(tmp_path):
    module = Classifier().eval()
    models = [export.export(module, [images(2)], ["image"], ["logits", "probabilities"], fmt,
                            name=f"classifier-{fmt}", max_batch_size=4, calibration=CALIBRATION).model
              for fmt in ("onnx", "torchscript")]
    repository.write_repository(tmp_path / "repo", models)
    import tritonclient.grpc as grpcclient

    batch = images(3, seed=9)
    with torch.inference_mode():
        expected = module(batch)[1].numpy()
    with serve(tmp_path / "repo") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for fmt in ("onnx", "torchscript"):
            tensor = grpcclient.InferInput("image", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch.numpy())
            served = client.infer(f"classifier-{fmt}", [tensor]).as_numpy("probabilities")
            np.testing.assert_allclose(served, expected, atol=1e-5, err_msg=fmt)
