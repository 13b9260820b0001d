"""Your own model's shapes: what ``trtis.export`` accepts is what the server serves. A token encoder,
a pooled conv net, and the shapes users bring: a batch other than the
example's, a dynamic sequence or spatial size, a per-example scalar, a batch frozen inside the module,
a custom op. Served by the real server at shapes the example did not have. (torchvision cannot be
imported beside the CPU build of torch that CI installs, so its models and ops run where it can.)"""
from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from trtis import config, export, repository, runtimes
from trtis.serving import LaunchError, load_check, serve

from servers import start_script

rng = np.random.default_rng(0)


class TextEncoder(torch.nn.Module):
    """Token ids [batch, sequence] -> per-token states and their mean (an embedding, a convolution
    over the sequence, layer norm). torch's TransformerEncoderLayer does not export to ONNX in eval
    mode: its fused fast path (aten::_transformer_encoder_layer_fwd) has no ONNX form."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(50, 16)
        self.mix = torch.nn.Conv1d(16, 16, 3, padding=1)
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, ids):
        states = self.norm(self.mix(self.embed(ids).transpose(1, 2)).transpose(1, 2))
        return states, states.mean(dim=1)


class Count(torch.nn.Module):
    """One number per example: a ``[batch]`` output."""

    def forward(self, x):
        return (x > 0).sum(dim=1).to(torch.int64), x * 2


class PerExample(torch.nn.Module):
    """A loop over the batch: tracing freezes it at the example's batch size."""

    def forward(self, x):
        return torch.stack([x[i] * (i + 1) for i in range(x.shape[0])])


def pooled() -> torch.nn.Module:
    """Convolutions, batch norm with statistics of its own, and adaptive pooling: any image size."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 3, 32, 32))  # BatchNorm statistics from a batch, not the initial 0 and 1
    return net.eval()


def ids(batch: int, sequence: int) -> np.ndarray:
    return rng.integers(0, 50, (batch, sequence)).astype(np.int64)


def images(batch: int, height: int, width: int) -> np.ndarray:
    return rng.normal(size=(batch, 3, height, width)).astype(np.float32)


def run(module: torch.nn.Module, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.inference_mode():
        outputs = module(*(torch.from_numpy(a) for a in arrays))
    return tuple(o.numpy() for o in ((outputs,) if isinstance(outputs, torch.Tensor) else outputs))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The conv net with a dynamic height and width (ONNX, TorchScript), the text encoder with a dynamic
    sequence (ONNX, TorchScript), each exported on an example of batch 2, and the counter."""
    models = []
    for fmt in ("onnx", "torchscript"):
        models.append(export.export(pooled(), [torch.from_numpy(images(2, 64, 64))], ["image"], ["logits"], fmt,
                                    name=f"pooled-{fmt}", max_batch_size=4,
                                    dynamic_axes={"image": {2: "height", 3: "width"}}).model)
        models.append(export.export(TextEncoder().eval(), [torch.from_numpy(ids(2, 5))], ["ids"], ["states", "pooled"],
                                    fmt, name=f"text-{fmt}", max_batch_size=4,
                                    dynamic_axes={"ids": {1: "sequence"}, "states": {1: "sequence"}}).model)
    models.append(export.export(Count(), [torch.from_numpy(rng.normal(size=(2, 3)).astype(np.float32))], ["x"], ["count", "twice"],
                                "onnx", name="count", max_batch_size=4).model)
    root = tmp_path_factory.mktemp("shapes")
    repository.write_repository(root / "repo", models)
    with serve(root / "repo") as server:
        yield grpcclient.InferenceServerClient(server.grpc_url), {m.config.name: m.config for m in models}


def infer(client, model: str, name: str, array: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    tensor = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
    tensor.set_data_from_numpy(array)
    answer = client.infer(model, [tensor])
    return [answer.as_numpy(output) for output in outputs]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_pooled_conv_net_serves_other_batches_and_image_sizes(served, fmt):
    client, configs = served
    assert list(configs[f"pooled-{fmt}"].input[0].dims) == [3, -1, -1]
    for batch, height, width in ((1, 64, 64), (3, 96, 80)):
        image = images(batch, height, width)
        [logits] = infer(client, f"pooled-{fmt}", "image", image, ["logits"])
        np.testing.assert_allclose(logits, run(pooled(), image)[0], atol=1e-4, err_msg=f"{batch}x{height}x{width}")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_dynamic_axes_add_to_the_batch_axis(served, fmt):
    """``dynamic_axes={"ids": {1: "sequence"}}`` keeps axis 0 the batch: batch 3 of 7 tokens, from an
    example of 2 of 5 (it used to replace the batch axis: any batch but 2 failed in the server)."""
    client, configs = served
    assert list(configs[f"text-{fmt}"].input[0].dims) == [-1]
    tokens = ids(3, 7)
    states, pooled = infer(client, f"text-{fmt}", "ids", tokens, ["states", "pooled"])
    expected = run(TextEncoder().eval(), tokens)
    assert states.shape == (3, 7, 16)
    np.testing.assert_allclose(states, expected[0], atol=1e-4)
    np.testing.assert_allclose(pooled, expected[1], atol=1e-4)


def test_a_per_example_scalar_is_configured_with_dims_and_served(served):
    client, configs = served
    output = next(o for o in configs["count"].output if o.name == "count")
    assert list(output.dims) == [1] and list(output.reshape.shape) == []
    x = rng.normal(size=(3, 3)).astype(np.float32)
    [count] = infer(client, "count", "x", x, ["count"])
    np.testing.assert_array_equal(count.reshape(3), run(Count(), x)[0])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_batch_frozen_inside_the_module_fails_at_export_not_in_the_server(fmt):
    with pytest.raises(export.ShapeError, match=r"the .* form fails at batch 1, which its config allows .*"
                                                r"axis 0 is the batch"):
        export.export(PerExample(), [torch.ones(2, 3)], ["x"], ["y"], fmt, name="per-example", max_batch_size=4)


def test_a_free_axis_the_compiled_program_fixed_fails_at_export_and_dynamic_axes_free_it():
    """``inputs=`` says the width is free, but only ``dynamic_axes`` tells torch.export so."""
    class Widths(torch.nn.Module):
        def forward(self, x):
            return x.cumsum(dim=2) - x.mean(dim=2, keepdim=True)

    example = [torch.ones(2, 3, 8)]
    free = [config.Tensor("x", np.float32, [3, -1])]
    with pytest.raises(export.ShapeError, match="the compiled form fails at twice the example's size on x axis 2.*"
                                                "name them in dynamic_axes"):
        export.export(Widths(), example, ["x"], ["y"], "compiled", name="widths", inputs=free)
    exported = export.export(Widths(), example, ["x"], ["y"], "compiled", name="widths", inputs=free,
                             dynamic_axes={"x": {2: "width"}})
    assert any("twice the example's size on x axis 2" in c.stage for c in exported.comparisons)


def test_a_model_whose_module_cannot_take_a_shape_its_config_allows_is_refused():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], 2, 4)

    with pytest.raises(export.ShapeError, match="the module itself fails at twice the example's size.*fixed dims"):
        export.export(Fixed(), [torch.ones(2, 8)], ["x"], ["y"], "onnx", name="fixed",
                      inputs=[config.Tensor("x", np.float32, [-1])])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "compiled"])
def test_an_example_larger_than_the_max_batch_exports(fmt):
    """convert.sh checks with five images; ``--max-batch-size 4`` made torch.export refuse (5 not in [2, 4])."""
    torch.manual_seed(0)
    exported = export.export(torch.nn.Linear(3, 2).eval(), [torch.randn(5, 3)], ["x"], ["y"], fmt, name="wide",
                             max_batch_size=4)
    assert exported.model.config.max_batch_size == 4


HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed (install.sh installs it on GPU hosts: its "
                                                "wheels do not import beside the CPU build of torch)")
def test_a_torchscript_model_with_a_torchvision_op_loads_and_serves(tmp_path):
    import torchvision

    class Nms(torch.nn.Module):
        def forward(self, boxes, scores):
            keep = torchvision.ops.nms(boxes[0], scores[0], 0.5)
            return torch.zeros_like(scores).index_fill_(1, keep, 1.0)

    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.8, 0.7]])
    model = export.export(Nms(), [boxes, scores], ["boxes", "scores"], ["kept"], "torchscript", name="nms",
                          max_batch_size=1).model
    repository.write_repository(tmp_path / "repo", [model])
    with serve(tmp_path / "repo") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensors = []
        for name, value in (("boxes", boxes), ("scores", scores)):
            tensors.append(grpcclient.InferInput(name, list(value.shape), "FP32"))
            tensors[-1].set_data_from_numpy(value.numpy())
        kept = client.infer("nms", tensors).as_numpy("kept")
    np.testing.assert_array_equal(kept, [[1.0, 0.0, 1.0]])


class Padded(torch.nn.Module):
    """A torchvision detector's list of dicts -> boxes [B, K, 4], scores [B, K], labels [B, K]."""

    def __init__(self, detector: torch.nn.Module, keep: int = 100):
        super().__init__()
        self.detector, self.keep = detector, keep

    def forward(self, images: torch.Tensor):
        found = self.detector(list(images))
        # Padded with tensors, not sliced by a count: a Python int would be frozen by tracing.
        boxes = [torch.cat([one["boxes"], one["boxes"].new_zeros(self.keep, 4)])[:self.keep] for one in found]
        scores = [torch.cat([one["scores"], one["scores"].new_zeros(self.keep)])[:self.keep] for one in found]
        labels = [torch.cat([one["labels"], one["labels"].new_zeros(self.keep)])[:self.keep] for one in found]
        return torch.stack(boxes), torch.stack(scores), torch.stack(labels)


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed (install.sh installs it on GPU hosts: its "
                                                "wheels do not import beside the CPU build of torch)")
def test_a_torchvision_detector_behind_a_padding_wrapper_serves_what_it_detects(tmp_path):
    """docs/converter.md's wrapper, on a detector nobody here wrote (random weights): exported,
    loaded in a fresh process at export, served, and compared on an image it was not traced with."""
    import torchvision

    torch.manual_seed(0)
    detector = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, score_thresh=0.0).eval()
    wrapped = Padded(detector, keep=20).eval()
    example, other = torch.rand(1, 3, 160, 160), torch.rand(1, 3, 160, 160)
    exported = export.export(wrapped, [example], ["images"], ["boxes", "scores", "labels"], "torchscript",
                             name="detector", max_batch_size=1, half=False)  # FP32 on a GPU too: same boxes
    assert any("fresh process" in row.stage for row in exported.comparisons)
    repository.write_repository(tmp_path / "repo", [exported.model])
    with serve(tmp_path / "repo") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        served = infer(client, "detector", "images", other.numpy(), ["boxes", "scores", "labels"])
    device = "cuda:0" if exported.kind == "gpu" else "cpu"  # where the server ran it
    with torch.inference_mode():
        expected = [t.cpu().numpy() for t in wrapped.to(device)(other.to(device))]
    for got, want in zip(served, expected):
        np.testing.assert_allclose(got, want, atol=1e-3)


OPS = """import torch

library = torch.library.Library("trtis_test", "DEF")
library.define("twice(Tensor x) -> Tensor")
library.impl("twice", lambda x: x * 2, "CPU")
"""


def test_a_custom_op_fails_the_load_with_its_whole_reason_and_loads_from_op_libraries(tmp_path, monkeypatch):
    """An op registered by a module of the user's: Triton's reason spans lines, and the line that
    names the op is not the first; the config's ``op_libraries`` has the backend import that module."""
    (tmp_path / "ops").mkdir()
    ops = tmp_path / "ops" / "trtis_test_ops.py"
    ops.write_text(OPS)
    monkeypatch.syspath_prepend(str(tmp_path / "ops"))
    import trtis_test_ops  # noqa: F401

    class Twice(torch.nn.Module):
        def forward(self, x):
            return torch.ops.trtis_test.twice(x)

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(Twice(), torch.ones(1, 2)), buffer)

    def repository_with(parameters: dict) -> object:
        twice = config.model_config("twice", platform="pytorch_libtorch", max_batch_size=2, parameters=parameters,
                                    inputs=[config.Tensor("x", np.float32, [2])],
                                    outputs=[config.Tensor("y", np.float32, [2])])
        root = tmp_path / f"repo-{len(parameters)}"
        repository.write_repository(root, [repository.Model(twice, buffer.getvalue())])
        return root

    result = start_script(repository_with({}), tmp_path / "state").start("--timeout", "120")
    assert result.returncode != 0
    assert "model 'twice' (version 1) did not load: " in result.stderr
    assert "trtis_test::twice" in result.stderr.split("did not load: ", 1)[1], result.stderr
    with serve(repository_with({runtimes.OP_LIBRARIES: str(ops)})) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        [twice] = infer(client, "twice", "x", np.ones((1, 2), np.float32), ["y"])
    np.testing.assert_array_equal(twice, [[2.0, 2.0]])
    with pytest.raises(LaunchError, match="op_libraries names 'no_such_ops'"):
        with serve(repository_with({runtimes.OP_LIBRARIES: "no_such_ops", "x": "1"})):
            pass


def test_an_export_that_loads_only_in_the_callers_process_fails_at_export(tmp_path, monkeypatch):
    """The export loads what it built in a fresh process with the backend's imports: a custom op
    the caller's script registered fails there, saying where to declare it, and loads once declared."""
    ops = tmp_path / "trtis_test_ops.py"
    ops.write_text(OPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import trtis_test_ops  # noqa: F401

    class Twice(torch.nn.Module):
        def forward(self, x):
            return torch.ops.trtis_test.twice(x)

    with pytest.raises(load_check.LoadError, match=r"fails in a fresh one, as it would in the server \(.*"
                                                   r"trtis_test::twice.*op_libraries"):
        export.export(Twice(), [torch.ones(2, 3)], ["x"], ["y"], "torchscript", name="twice")
    exported = export.export(Twice(), [torch.ones(2, 3)], ["x"], ["y"], "torchscript", name="twice",
                             parameters={runtimes.OP_LIBRARIES: str(ops)})
    fresh = [row for row in exported.comparisons if "fresh process" in row.stage]
    assert fresh and all(row.ok for row in fresh), exported.comparisons


def test_the_fresh_process_takes_any_tensor_name():
    """numpy's savez has an argument named ``file``: a tensor of that name crossed to the fresh process anyway."""
    exported = export.export(torch.nn.Linear(3, 2).eval(), [torch.ones(2, 3)], ["file"], ["args"], "onnx", name="named")
    assert any("fresh process" in row.stage and row.ok for row in exported.comparisons)
