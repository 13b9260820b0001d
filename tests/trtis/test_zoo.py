"""A zoo of models nobody here wrote (``transformers``, built from small configs with random weights,
nothing downloaded) x every CPU format: exported with ``trtis.export``, served by the real server,
and compared with PyTorch at batch sizes (and sequence lengths) other than the example's. Each cell
is served within tolerance, or refused at export with an error that says what to change; the table
in docs/converter.md is this run's (``TRTIS_WRITE_ZOO_TABLE=1`` rewrites it)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from trtis import export, repository, verify
from trtis.serving import ServerConfig, serve

transformers = pytest.importorskip("transformers", reason="transformers is not installed (install.sh installs it)")

DOC = Path(__file__).parents[2] / "docs" / "converter.md"
BEGIN, END = "<!-- zoo table: written by tests/trtis/test_zoo.py -->", "<!-- end of the zoo table -->"
FORMATS = ("onnx", "onnx-int8", "torchscript", "compiled")
# The compiled format compiles each new batch size at its first request on a CPU (minutes for the
# zoo, issue 24): two models cover it here.
COMPILED = ("resnet", "bert")


@dataclass
class Entry:
    """A model: how to build it, its example, and its inputs at a shape of the test's choosing."""

    build: callable
    inputs: callable  # (batch, size) -> {name: array}
    outputs: list[str]
    dynamic_axes: dict = field(default_factory=dict)
    sizes: tuple[int, int] = (32, 32)  # the example's size, and another one the config allows
    max_batch_size: int = 4  # 0: no batch axis (axis 0 is one of the model's own)


def image(batch: int, size: int) -> dict[str, np.ndarray]:
    return {"pixel_values": np.random.default_rng(batch * 100 + size).normal(size=(batch, 3, size, size)).astype(np.float32)}


def tokens(batch: int, size: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.random.default_rng(batch * 100 + size).integers(0, 100, (batch, size)).astype(np.int64)}


def audio(batch: int, size: int) -> dict[str, np.ndarray]:
    return {"input_values": np.random.default_rng(batch * 100 + size).normal(size=(batch, size)).astype(np.float32)}


def masked_image(batch: int, size: int) -> dict[str, np.ndarray]:
    """DETR's two inputs: images, and a mask whose last example has padding on the right."""
    mask = np.ones((batch, size, size), np.int64)
    mask[-1, :, size * 3 // 4:] = 0
    return {**image(batch, size), "pixel_mask": mask}


def bert() -> torch.nn.Module:
    return T.BertModel(T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=64))


T = transformers
ZOO = {
    "bert": Entry(bert, tokens, ["last_hidden_state", "pooler_output"],
                  {"input_ids": {1: "sequence"}, "last_hidden_state": {1: "sequence"}}, (12, 20)),
    # No batch axis: Triton passes requests through whole, and axis 0 is the model's own.
    "bert, no batch axis": Entry(bert, tokens, ["last_hidden_state", "pooler_output"],
                                 {"input_ids": {0: "rows", 1: "sequence"}, "last_hidden_state": {0: "rows", 1: "sequence"},
                                  "pooler_output": {0: "rows"}}, (12, 20), max_batch_size=0),
    "vit": Entry(lambda: T.ViTForImageClassification(T.ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                                                  num_hidden_layers=2, num_attention_heads=2,
                                                                  intermediate_size=64, num_labels=5)),
                 image, ["logits"]),
    "resnet": Entry(lambda: T.ResNetForImageClassification(T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32],
                                                                          depths=[1, 1], num_labels=5)),
                    image, ["logits"], {"pixel_values": {2: "height", 3: "width"}}, (32, 48)),
    "mobilenet_v2": Entry(lambda: T.MobileNetV2ForImageClassification(T.MobileNetV2Config(
        image_size=32, depth_multiplier=0.35, num_labels=5)), image, ["logits"]),
    "convnext": Entry(lambda: T.ConvNextForImageClassification(T.ConvNextConfig(
        num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=5)), image, ["logits"]),
    "segformer": Entry(lambda: T.SegformerForSemanticSegmentation(T.SegformerConfig(
        hidden_sizes=[16, 32], depths=[1, 1], num_encoder_blocks=2, sr_ratios=[2, 1], num_attention_heads=[1, 2],
        decoder_hidden_size=32, num_labels=3, strides=[4, 2], patch_sizes=[7, 3], mlp_ratios=[2, 2])),
        image, ["logits"]),
    # Speech: a convolutional feature encoder and a transformer over any number of samples.
    "wav2vec2": Entry(lambda: T.Wav2Vec2ForCTC(T.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
        conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, vocab_size=12)),
        audio, ["logits"], {"input_values": {1: "samples"}, "logits": {1: "frames"}}, (400, 640)),
    # A detector with two inputs of a free spatial size; its outputs are a ModelOutput.
    "detr": Entry(lambda: T.DetrForObjectDetection(T.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=T.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], out_features=["stage2"]),
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=5, num_labels=3)),
        masked_image, ["logits", "pred_boxes"],
        {"pixel_values": {2: "height", 3: "width"}, "pixel_mask": {1: "height", 2: "width"}}, (32, 48)),
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name)


def module(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return ZOO[name].build().eval()


def reference(name: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        returned = module(name)(*(torch.from_numpy(a) for a in feed.values()))
    return {output: returned[output].numpy() for output in ZOO[name].outputs}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Every model in every format it exports to, served by one server; the refusals by cell."""
    models, refused = [], {}
    for name, entry in ZOO.items():
        example = entry.inputs(2, entry.sizes[0])
        calibration = [entry.inputs(2, entry.sizes[0] + step) for step in range(4)] if entry.dynamic_axes else \
            [entry.inputs(2 + step, entry.sizes[0]) for step in range(4)]
        for fmt in FORMATS:
            if fmt == "compiled" and name not in COMPILED:
                continue
            try:
                exported = export.export(module(name), [torch.from_numpy(a) for a in example.values()], list(example),
                                         entry.outputs, fmt, name=f"{slug(name)}-{fmt}",
                                         max_batch_size=entry.max_batch_size,
                                         dynamic_axes=entry.dynamic_axes, calibration=calibration)
                models.append(exported.model)
            except (export.ShapeError, verify.VerificationError, ValueError) as error:
                refused[(name, fmt)] = error
    root = tmp_path_factory.mktemp("zoo")
    repository.write_repository(root / "repo", models)
    written = files(root / "repo")
    with serve(root / "repo", ServerConfig(timeout=600), state_dir=root / "state") as server:
        yield Zoo(grpcclient.InferenceServerClient(server.grpc_url), refused, root, written)


@dataclass
class Zoo:
    client: grpcclient.InferenceServerClient
    refused: dict  # (model, format) -> the export's error
    root: Path  # repo/ (the repository), state/ (the server's state folder)
    written: list[Path]  # the repository's files as the export wrote them


def files(folder: Path) -> list[Path]:
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


def infer(client, model: str, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    tensors = []
    for name, array in feed.items():
        tensors.append(grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32"))
        tensors[-1].set_data_from_numpy(array)
    answer = client.infer(model, tensors, client_timeout=600)
    return {output: answer.as_numpy(output) for output in outputs}


def outcome(zoo, name: str, fmt: str) -> str:
    """Serve the cell at batch 1 and 3 at the example's size and at the other one; what happened, in words."""
    client, refused = zoo.client, zoo.refused
    if fmt == "compiled" and name not in COMPILED:
        return "not run in CI"
    if (name, fmt) in refused:
        error = refused[(name, fmt)]
        assert re.search(r"choose|give|name them|wrap|calibrat|compare_reduced|use another format", str(error)), \
            f"{name} {fmt}: the refusal does not say what to change: {error}"
        return f"refused at export ({type(error).__name__})"
    entry, rows = ZOO[name], []
    for batch in (1, 3):
        for size in entry.sizes:
            feed = entry.inputs(batch, size)
            served = infer(client, f"{slug(name)}-{fmt}", feed, entry.outputs)
            rows += verify.within(1e-3)(f"{name} {fmt} batch {batch} size {size}", expected(zoo, name, fmt, feed), served)
    verify.require(rows)
    rows = "1 and 3 rows" if entry.max_batch_size == 0 else "batch 1 and 3"
    return f"served at {rows}" + (f", sizes {entry.sizes[0]} and {entry.sizes[1]}" if entry.dynamic_axes else "")


def expected(zoo, name: str, fmt: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the server should answer: PyTorch's outputs, or for INT8 the INT8 model's own, run here
    (the export judged it against PyTorch; how well INT8 does on other data is calibration's
    business, and ONNX Runtime's INT8 kernels differ between CPUs)."""
    if fmt != "onnx-int8":
        return reference(name, feed)
    artefact = zoo.root / "repo" / f"{slug(name)}-{fmt}" / "1" / "model.onnx"
    return {output: value for output, value in export.onnx.run(artefact.read_bytes(), feed).items()
            if output in ZOO[name].outputs}


def table(cells: dict[tuple[str, str], str]) -> str:
    lines = ["| model | " + " | ".join(FORMATS) + " |", "|---|" + "---|" * len(FORMATS)]
    for name in ZOO:
        lines.append(f"| {name} | " + " | ".join(cells[(name, fmt)] for fmt in FORMATS) + " |")
    return "\n".join(lines) + f"\n\n{INT8_NOTE.format(int8_kernels())}"


INT8_NOTE = "The onnx-int8 column was measured on an x86 CPU {}."


def int8_kernels() -> str:
    """ONNX Runtime's INT8 kernels on this CPU: with VNNI they compute otherwise than without (the
    u8s8 path can saturate), so an INT8 form can pass its check on one CPU and be refused on another."""
    cpu = Path("/proc/cpuinfo")
    flags = cpu.read_text() if cpu.exists() else ""
    return "with VNNI" if re.search(r"\b(avx512_vnni|avx_vnni)\b", flags) else "without VNNI"


def without_int8(block: str) -> str:
    """The table with its INT8 column and note blanked: what must match on a CPU of the other kind."""
    column = 1 + FORMATS.index("onnx-int8")
    rows = [line.split(" | ") if line.startswith("| ") and not line.startswith("| model") else line
            for line in block.splitlines() if not line.startswith("The onnx-int8 column")]
    return "\n".join(" | ".join(row[:column] + ["-"] + row[column + 1:]) if isinstance(row, list) else row
                     for row in rows)


def test_every_model_in_every_format_is_served_as_pytorch_computes_it_or_refused_at_export(zoo):
    cells = {(name, fmt): outcome(zoo, name, fmt) for name in ZOO for fmt in FORMATS}
    assert sum(cell.startswith("served") for cell in cells.values()) >= len(ZOO) * 2, cells
    written = table(cells)
    text = DOC.read_text()
    block = f"{BEGIN}\n{written}\n{END}"
    if os.environ.get("TRTIS_WRITE_ZOO_TABLE") == "1":
        DOC.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))
        return
    documented = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), text, flags=re.S).group(0)
    if INT8_NOTE.format(int8_kernels()) not in documented:  # written on a CPU of the other kind
        documented, block = without_int8(documented), without_int8(block)
    assert block == documented, (f"docs/converter.md's zoo table is not this run's; rerun with "
                                 f"TRTIS_WRITE_ZOO_TABLE=1:\n{written}")


def test_compiled_models_start_warm_and_serving_writes_nothing_into_the_repository(zoo):
    """The inductor cache shipped beside each compiled model seeds one beside the server's state;
    requests at batch 1 and 3 compile nothing there (the load warmed both graphs), and the
    repository's files stay as the export wrote them."""
    caches = {name: zoo.root / "state" / "inductor-cache" / f"{slug(name)}-compiled" for name in COMPILED}
    before = {name: files(cache) for name, cache in caches.items()}
    for name in COMPILED:
        shipped = files(zoo.root / "repo" / f"{slug(name)}-compiled" / "1" / "inductor-cache")
        assert shipped and set(shipped) <= set(before[name]), f"{name}: the state's cache is not seeded from the shipped one"
        entry = ZOO[name]
        for batch in (1, 3):
            infer(zoo.client, f"{slug(name)}-compiled", entry.inputs(batch, entry.sizes[0]), entry.outputs)
    assert {name: files(cache) for name, cache in caches.items()} == before, "a request compiled a graph"
    assert files(zoo.root / "repo") == zoo.written


def test_dict_outputs_are_chosen_by_name_and_a_wrong_name_lists_what_the_module_returns():
    example = [torch.from_numpy(tokens(2, 12)["input_ids"])]
    only = export.export(module("bert"), example, ["input_ids"], ["pooler_output"], "torchscript", name="pooled")
    assert [o.name for o in only.model.config.output] == ["pooler_output"]
    one = torch.ones(1)
    assert export.outputs.output_paths(((one, one), one), ["a", "b", "c"]) == ["0.0", "0.1", "1"]
    assert export.outputs.output_paths({"x": one, "y": [one, None]}, ["y.0"]) == ["y.0"]
    with pytest.raises(ValueError, match=r"do not match what the module returns \(last_hidden_state: tensor "
                                         r"\[2, 12, 32\], pooler_output: tensor \[2, 32\]\)"):
        export.export(module("bert"), example, ["input_ids"], ["hidden"], "onnx", name="wrong")


def test_calibration_mistakes_are_named_before_onnx_runtime_sees_them():
    example = [torch.from_numpy(image(2, 32)["pixel_values"])]
    with pytest.raises(ValueError, match=r"calibration feed 0 has \['image'\]; each feed is a dict with exactly the "
                                         r"inputs \['pixel_values'\]"):
        export.export(module("resnet"), example, ["pixel_values"], ["logits"], "onnx-int8", name="r",
                      calibration=[{"image": np.zeros((2, 3, 32, 32), np.float32)}])
    with pytest.raises(ValueError, match=r"input 'pixel_values': expected a float32 array of rank 4 .* got float64"):
        export.export(module("resnet"), example, ["pixel_values"], ["logits"], "onnx-int8", name="r",
                      calibration=[{"pixel_values": np.zeros((2, 3, 32, 32))}])


def test_the_fp16_form_keeps_a_dict_and_casts_its_floating_tensors_back():
    """GPU formats build ``HalfPrecision`` inside the flattening wrapper: a dict comes back as a dict."""
    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            return {"scores": self.linear(x), "positive": (x > 0).sum(dim=1)}

    half = export.outputs.Selected(export.torchscript.HalfPrecision(Heads()), ["scores", "positive"])
    scores, positive = half(torch.ones(2, 4))
    assert (scores.dtype, positive.dtype) == (torch.float32, torch.int64)
