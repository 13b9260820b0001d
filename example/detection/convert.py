"""``convert.sh``: a CenterNet checkpoint -> the Triton model repository of the detection ensemble.

Stages: preprocess (TensorFlow graph, checked against the OpenCV reference), network (PyTorch ->
ONNX -> simplified ONNX, each checked against the previous), postprocess (PyTorch -> ONNX, checked),
then the repository (configs by trtis, validated, written atomically).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from detection import letterbox, pipeline
from detection.inference import InProcessPipeline
from detection.network import NetworkSpec, load_network
from detection.postprocess import CenterNetDecoder
from trtis import config, repository, verify
from trtis import onnx as trtis_onnx

log = logging.getLogger("convert")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_CHECKPOINT = HERE / "weights" / "centernet_dlav0_34.pth"
TEST_DATA = ROOT / "example" / "test-data"
DEFAULT_CLASSES = ["circle", "rectangle", "triangle", "star", "cross", "ring"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Largest differences accepted between a stage and its source.
# OpenCV's warp places pixels to 1/32 px (fixed point) where TensorFlow computes in float, so a
# full-contrast edge may move by up to 255/32 grey levels: 0.11 after normalisation.
PREPROCESS_TOLERANCE = {pipeline.IMAGE: 0.12, pipeline.META_AFFINE: 1e-4, pipeline.META_SIZE: 0.0}
NETWORK_TOLERANCE = 2e-3
BOX_TOLERANCE, SCORE_TOLERANCE = 1e-2, 1e-5  # original-image pixels; sigmoid scores


@dataclass
class Options:
    output: Path
    checkpoint: Path | None = None
    random_init: int | None = None
    input_size: int = pipeline.INPUT_SIZE
    max_batch_size: int = 8
    instances: int = 1
    network_format: str = "onnx"
    preprocess_format: str = "tensorflow"
    check_images: tuple[Path, ...] = ()


def sample_images(paths: tuple[Path, ...]) -> list[bytes]:
    """Real images to check each stage with: the given ones (or a few of example/test-data),
    plus a grayscale PNG and a tiny image, which exercise the other decoding paths."""
    files = list(paths) or sorted(p for p in TEST_DATA.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:3]
    images = [p.read_bytes() for p in files]
    rng = np.random.default_rng(0)
    gray = cv2.GaussianBlur(rng.integers(0, 256, (120, 200), dtype=np.uint8), (9, 9), 4)
    images.append(cv2.imencode(".png", gray)[1].tobytes())
    images.append(cv2.imencode(".jpg", rng.integers(0, 256, (7, 5, 3), dtype=np.uint8))[1].tobytes())
    return images


def preprocess_stage(options: Options, images: list[bytes], rows: list) -> repository.Model:
    size, batching = options.input_size, options.max_batch_size
    outputs = [config.Tensor(pipeline.IMAGE, np.float32, [3, size, size]),
               config.Tensor(pipeline.META_AFFINE, np.float32, [2, 3]),
               config.Tensor(pipeline.META_SIZE, np.float32, [2])]
    common = dict(max_batch_size=batching, inputs=[config.Tensor(pipeline.RAW_IMAGE, np.object_, [1])],
                  outputs=outputs, instances=[config.Instances(options.instances)],
                  dynamic_batching=config.DynamicBatching(max_queue_delay_us=1000))
    if options.preprocess_format == "python":
        model = config.model_config(pipeline.PREPROCESS, backend="python",
                                    parameters={"input_size": size}, **common)
        return repository.Model(model, HERE / "opencv_preprocess_model.py", files={"1/letterbox.py": HERE / "letterbox.py"})
    from trtis import tensorflow as trtis_tf
    from detection.preprocess import preprocess_graph

    graph = preprocess_graph(size)
    names = [pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE]
    for data in images:
        served = trtis_tf.run(graph, {pipeline.RAW_IMAGE: np.array([[data]], dtype=object)}, names)
        reference = letterbox.preprocess(data, size)
        rows += verify.compare("preprocess: TensorFlow vs OpenCV", dict(zip(names, reference)),
                               {n: v[0] for n, v in zip(names, served)}, PREPROCESS_TOLERANCE)
    model = config.model_config(pipeline.PREPROCESS, platform="tensorflow_graphdef", **common)
    return repository.Model(model, graph.SerializeToString())


def network_stage(options: Options, network: torch.nn.Module, image: np.ndarray, rows: list,
                  workdir: Path) -> tuple[repository.Model, int]:
    example = torch.from_numpy(image)
    with torch.inference_mode():
        reference = dict(zip(pipeline.HEADS, (t.numpy() for t in network(example))))
    exported = trtis_onnx.export(network, [example], [pipeline.IMAGE], list(pipeline.HEADS))
    feeds = {pipeline.IMAGE: image}
    rows += verify.compare("network: PyTorch vs ONNX", reference, trtis_onnx.run(exported, feeds), NETWORK_TOLERANCE)
    simplified = trtis_onnx.simplify(exported)
    rows += verify.compare("network: ONNX vs simplified", trtis_onnx.run(exported, feeds),
                           trtis_onnx.run(simplified, feeds), NETWORK_TOLERANCE)
    path = workdir / "network.onnx"
    path.write_bytes(simplified.SerializeToString())
    num_classes = reference["hm"].shape[1]
    out = options.input_size // pipeline.OUTPUT_STRIDE
    model = config.model_config(
        pipeline.NETWORK, platform="onnxruntime_onnx", max_batch_size=options.max_batch_size,
        inputs=[config.Tensor(pipeline.IMAGE, np.float32, [3, options.input_size, options.input_size])],
        outputs=[config.Tensor(name, np.float32, [channels, out, out])
                 for name, channels in zip(pipeline.HEADS, (num_classes, 2, 2))],
        instances=[config.Instances(options.instances)],
        dynamic_batching=config.DynamicBatching(max_queue_delay_us=2000))
    return repository.Model(model, path), num_classes


def postprocess_stage(options: Options, heads: tuple[torch.Tensor, ...], meta: tuple[np.ndarray, np.ndarray],
                      class_names: list[str], rows: list) -> repository.Model:
    decoder = CenterNetDecoder().eval()
    inputs = [*heads, *(torch.from_numpy(m) for m in meta)]
    names = [*pipeline.HEADS, pipeline.META_AFFINE, pipeline.META_SIZE]
    outputs = [pipeline.BOXES, pipeline.SCORES, pipeline.CLASSES]
    with torch.inference_mode():
        reference = dict(zip(outputs, (t.numpy() for t in decoder(*inputs))))
    dynamic = {name: {0: "batch"} for name in [*names, *outputs]}
    dynamic.update({head: {0: "batch", 2: "height", 3: "width"} for head in pipeline.HEADS})
    exported = trtis_onnx.export(decoder, inputs, names, outputs, dynamic_axes=dynamic)
    feeds = {name: t.numpy() if isinstance(t, torch.Tensor) else t for name, t in zip(names, inputs)}
    exported_outputs = trtis_onnx.run(exported, feeds)
    rows += verify.compare_detections("postprocess: PyTorch vs ONNX", reference, exported_outputs,
                                      BOX_TOLERANCE, SCORE_TOLERANCE)
    simplified = trtis_onnx.simplify(exported)
    rows += verify.compare_detections("postprocess: ONNX vs simplified", exported_outputs,
                                      trtis_onnx.run(simplified, feeds), BOX_TOLERANCE, SCORE_TOLERANCE)
    num_classes, out = heads[0].shape[1], options.input_size // pipeline.OUTPUT_STRIDE
    model = config.model_config(
        pipeline.POSTPROCESS, platform="onnxruntime_onnx", max_batch_size=options.max_batch_size,
        inputs=[config.Tensor(pipeline.HEADS[0], np.float32, [num_classes, out, out]),
                config.Tensor(pipeline.HEADS[1], np.float32, [2, out, out]),
                config.Tensor(pipeline.HEADS[2], np.float32, [2, out, out]),
                config.Tensor(pipeline.META_AFFINE, np.float32, [2, 3]),
                config.Tensor(pipeline.META_SIZE, np.float32, [2])],
        outputs=[config.Tensor(pipeline.BOXES, np.float32, [pipeline.TOP_K, 4]),
                 config.Tensor(pipeline.SCORES, np.float32, [pipeline.TOP_K]),
                 config.Tensor(pipeline.CLASSES, np.int32, [pipeline.TOP_K], label_filename="labels.txt")],
        instances=[config.Instances(options.instances)],
        dynamic_batching=config.DynamicBatching(max_queue_delay_us=1000),
        parameters={"intra_op_thread_count": 1})
    return repository.Model(model, simplified.SerializeToString(),
                            files={"labels.txt": ("\n".join(class_names) + "\n").encode()})


def convert(options: Options) -> list[verify.Comparison]:
    """Run every stage and write the repository; raises ``VerificationError`` naming a stage that disagrees."""
    if options.network_format != "onnx":
        raise ValueError(f"--network-format {options.network_format!r} is not available; use onnx")
    if options.checkpoint is not None:
        network, spec = load_network(options.checkpoint)
    else:
        print(f"Using seeded random weights (seed {options.random_init}): the detections will be meaningless")
        network, spec = load_network(None, NetworkSpec(DEFAULT_CLASSES), seed=options.random_init or 0)
    images = sample_images(options.check_images)
    reference = InProcessPipeline(network, options.input_size)
    rows: list[verify.Comparison] = []
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=4, desc="convert", unit="stage") as progress:
        progress.set_postfix_str("preprocess")
        preprocess = preprocess_stage(options, images, rows)
        progress.update()
        progress.set_postfix_str("network")
        image, meta_affine, meta_size = reference.preprocess(images)
        network_model, _ = network_stage(options, network, image, rows, Path(tmp))
        progress.update()
        progress.set_postfix_str("postprocess")
        heads = reference.network_outputs(image)
        postprocess = postprocess_stage(options, heads, (meta_affine, meta_size), spec.class_names, rows)
        progress.update()
        verify.require(rows)
        progress.set_postfix_str("repository")
        ensemble = config.ensemble_config(pipeline.ENSEMBLE, [config.Step(preprocess.config),
                                                              config.Step(network_model.config),
                                                              config.Step(postprocess.config)])
        ensemble.parameters["class_names"].string_value = json.dumps(spec.class_names)
        repository.write_repository(options.output, [preprocess, network_model, postprocess,
                                                     repository.Model(ensemble)])
        progress.update()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convert.sh", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help=f"official-format CenterNet dlav0_34 checkpoint, with "
                        f"<name>.json beside it naming the classes (default: {DEFAULT_CHECKPOINT.relative_to(ROOT)})")
    source.add_argument("--random-init", type=int, metavar="SEED", help="seeded random weights instead (for tests)")
    parser.add_argument("--output", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--input-size", type=int, default=pipeline.INPUT_SIZE)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--instances", type=int, default=1, help="instances of each composing model")
    parser.add_argument("--network-format", default="onnx", choices=["onnx"])
    parser.add_argument("--preprocess-format", default="tensorflow", choices=["tensorflow", "python"],
                        help="tensorflow: frozen GraphDef; python: OpenCV Python model (for images without TF)")
    parser.add_argument("--check-images", type=Path, nargs="*", default=(), help="images to verify each stage with")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.input_size % 32:
        parser.error("--input-size must be a multiple of 32 (DLA-34 halves it five times)")
    checkpoint = args.checkpoint
    if checkpoint is None and args.random_init is None:
        checkpoint = DEFAULT_CHECKPOINT
        if not checkpoint.exists():
            parser.error(f"{checkpoint} not found: pass --checkpoint, or --random-init SEED for a demo")
    options = Options(args.output, checkpoint, args.random_init, args.input_size, args.max_batch_size,
                      args.instances, args.network_format, args.preprocess_format, tuple(args.check_images))
    try:
        rows = convert(options)
    except (verify.VerificationError, FileNotFoundError, ValueError) as error:
        print(f"convert.sh: {error}", file=sys.stderr)
        return 1
    print(verify.table(_largest(rows)))
    print(f"Model repository written to {options.output} ({', '.join(sorted(p.name for p in options.output.iterdir() if p.is_dir()))})")
    return 0


def _largest(rows: list[verify.Comparison]) -> list[verify.Comparison]:
    """One row per stage and output: the largest difference over all checked images."""
    largest: dict[tuple[str, str], verify.Comparison] = {}
    for row in rows:
        key = (row.stage, row.output)
        if key not in largest or row.max_abs > largest[key].max_abs:
            largest[key] = row
    return list(largest.values())


if __name__ == "__main__":
    sys.exit(main())
