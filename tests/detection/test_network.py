"""The DLA-34 CenterNet network and its official-format checkpoint loader."""
from __future__ import annotations

import copy

import pytest
import torch

from detection import pipeline
from detection.accuracy_split import half_unavailable
from detection.network import CenterNet, CheckpointMismatch, NetworkSpec, load_network, save_checkpoint
from detection.network.checkpoint import random_network


def test_structure_follows_the_official_dlav0_34():
    network = CenterNet(num_classes=6)
    state = network.state_dict()
    assert len(state) == 326
    assert state["base.fc.weight"].shape == (1000, 512, 1, 1), "the unused ImageNet classifier stays"
    assert state["dla_up.ida_0.up_1.weight"].shape == (256, 1, 4, 4), "depthwise transposed conv, k4 s2"
    assert state["dla_up.ida_2.node_3.0.weight"].shape == (64, 128, 3, 3)
    assert state["hm.0.weight"].shape == (256, 64, 3, 3) and state["hm.2.weight"].shape == (6, 256, 1, 1)
    assert torch.all(state["hm.2.bias"] == -2.19)
    assert "base.level5.root.conv.weight" in state and "base.level4.tree2.root.conv.weight" in state


def test_forward_returns_hm_wh_reg_at_stride_4():
    network = random_network(NetworkSpec(["a", "b", "c"]), seed=0)
    with torch.inference_mode():
        hm, wh, reg = network(torch.randn(2, 3, 128, 160))
    assert hm.shape == (2, 3, 32, 40) and wh.shape == (2, 2, 32, 40) and reg.shape == (2, 2, 32, 40)
    assert 0.0 < torch.sigmoid(hm).mean() < 0.9, "random weights must not saturate the heatmap"


def test_official_checkpoint_round_trip_with_module_prefix(tmp_path):
    spec = NetworkSpec(["circle", "ring"])
    network = random_network(spec, seed=3)
    path = tmp_path / "model_last.pth"
    save_checkpoint(network, spec, path, epoch=7)
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 7 and set(saved) == {"epoch", "state_dict"}
    assert NetworkSpec.read(path).class_names == ["circle", "ring"]
    loaded, _ = load_network(path)
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, path)
    prefixed, _ = load_network(path)
    assert torch.equal(prefixed.state_dict()["hm.2.bias"], network.state_dict()["hm.2.bias"])


def test_fp16_checkpoint_loads_as_fp32(tmp_path):
    spec = NetworkSpec(["a"])
    path = tmp_path / "half.pth"
    save_checkpoint(random_network(spec, seed=1), spec, path, epoch=1, half=True)
    loaded, _ = load_network(path)
    assert loaded.hm[2].weight.dtype == torch.float32


def test_mismatched_keys_are_reported_by_name(tmp_path):
    spec = NetworkSpec(["a", "b"])
    state = random_network(spec, seed=0).state_dict()
    state["hm.2.weight"] = torch.zeros(5, 256, 1, 1)
    state["extra.weight"] = torch.zeros(1)
    del state["wh.0.bias"]
    path = tmp_path / "bad.pth"
    torch.save({"epoch": 1, "state_dict": state}, path)
    spec.write(path)
    with pytest.raises(CheckpointMismatch) as error:
        load_network(path)
    message = str(error.value)
    assert "missing (1): wh.0.bias" in message and "unexpected (1): extra.weight" in message
    assert "mis-shaped (1): hm.2.weight (5, 256, 1, 1) != (2, 256, 1, 1)" in message


def test_missing_class_names_file_says_what_to_write(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"epoch": 1, "state_dict": {}}, path)
    with pytest.raises(FileNotFoundError, match="weights.json not found: it names the classes"):
        load_network(path)


def test_the_decoded_detector_is_the_network_then_the_decoder():
    """The GPU path's single model (network and decoding) computes what the two stages compute."""
    from detection.postprocess import CenterNetDecoder, DecodedDetector

    network = random_network(NetworkSpec(["a", "b", "c"]), seed=0).eval()
    image = torch.randn(2, 3, 64, 64)
    meta_affine = torch.tensor([[2.0, 0.0, -3.0], [0.0, 2.0, 1.0]]).expand(2, 2, 3)
    meta_size = torch.tensor([[100.0, 120.0]] * 2)
    with torch.inference_mode():
        fused = DecodedDetector(network)(image, meta_affine, meta_size)
        separate = CenterNetDecoder()(*network(image), meta_affine, meta_size)
    for a, b in zip(fused, separate):
        torch.testing.assert_close(a, b)


def test_the_fp16_form_keeps_the_heads_last_convolutions_unrounded():
    network = random_network(NetworkSpec(["a", "b"]), seed=1)  # FP32 weights, most not FP16-exact
    half = copy.deepcopy(network).half()
    for head in pipeline.HEADS:
        torch.testing.assert_close(getattr(half, head)[-1].layer.weight, getattr(network, head)[-1].weight,
                                   rtol=0, atol=0)
    assert not torch.equal(half.hm[0].weight.float(), network.hm[0].weight), "the rest is FP16"


@pytest.mark.skipif(half_unavailable() is not None, reason=str(half_unavailable()))
def test_the_fp16_form_keeps_each_heads_last_convolution_and_the_heads_in_fp32(network):
    from detection import dataset, letterbox

    ours = copy.deepcopy(network).half().half().to(memory_format=torch.channels_last)  # twice: the same form
    throughout = torch.nn.Module.half(copy.deepcopy(network)).to(memory_format=torch.channels_last)
    for head in pipeline.HEADS:
        layers = getattr(ours, head)
        assert layers[0].weight.dtype == torch.float16 and layers[-1].layer.weight.dtype == torch.float32, head
    assert ours.base.base_layer[0].weight.dtype == torch.float16
    image = torch.from_numpy(letterbox.preprocess_batch([dataset.generate(3, 0).jpeg], 128)[0])
    with torch.inference_mode():
        exact = network(image)
        heads = ours(image.half().contiguous(memory_format=torch.channels_last))
        rounded = throughout(image.half().contiguous(memory_format=torch.channels_last))
    assert [head.dtype for head in heads] == [torch.float32] * 3
    for name, want, got, fp16 in zip(pipeline.HEADS, exact, heads, rounded):
        error, error_fp16 = (want - got).abs().mean().item(), (want - fp16.float()).abs().mean().item()
        assert error < error_fp16, (name, error, error_fp16)
