"""``convert.sh``: a CenterNet checkpoint -> the Triton model repository of the detection ensemble.

Stages: preprocess (TensorFlow graph, checked against the OpenCV reference), network (PyTorch ->
ONNX -> simplified ONNX, each checked against the previous), postprocess (PyTorch -> ONNX, checked),
then the repository (configs by trtis, validated, written atomically).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from detection import dataset, letterbox, pipeline
from detection.inference import InProcessPipeline
from detection.network import NetworkSpec, load_network
from detection.postprocess import CenterNetDecoder
from trtis import config, quantize, repository, tensorrt, torchscript, verify
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
# A reduced-precision network (INT8, FP16) is checked on its heatmap peaks instead: every FP32 peak
# scoring over 0.3 must have a peak of the same class in the same or a neighbouring heatmap cell
# (centres within 1.5 cells, 6 input pixels) whose score is within 0.25 (INT8 moved the largest score
# by 0.21 on the test images). Box sizes are judged by the served mAP (int8_report.py).
REDUCED = {"min_score": 0.3, "score_tolerance": 0.25, "box_tolerance": 1.5 * pipeline.OUTPUT_STRIDE}
NETWORK_FORMATS = ("auto", "tensorrt", "onnx", "onnx-int8", "torchscript")


@dataclass
class Options:
    output: Path
    checkpoint: Path | None = None
    random_init: int | None = None
    input_size: int = pipeline.INPUT_SIZE
    max_batch_size: int = 8
    preprocess_instances: int = 2
    network_instances: int = 2
    postprocess_instances: int = 1
    gpus: tuple[int, ...] = ()
    warmup_max_batch: int = 4
    network_format: str = "onnx"
    preprocess_format: str = "tensorflow"
    check_images: tuple[Path, ...] = ()
    calibration_images: int = 64
    calibration_dir: Path | None = None
    calibration_method: str = "minmax"
    int8_form: str = "cpu"
    calibration_cache: Path | None = ROOT / ".triton" / "calibration"


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
                  outputs=outputs, instances=[config.Instances(options.preprocess_instances)],
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


def centres(detections: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Detections with each box replaced by its centre (x, y, x, y): where the heatmap peaks are."""
    boxes = detections[pipeline.BOXES]
    middle = (boxes[..., :2] + boxes[..., 2:]) / 2
    return {**detections, pipeline.BOXES: np.concatenate([middle, middle], axis=-1)}


def decoded(heads: dict[str, np.ndarray] | tuple, size: int) -> dict[str, np.ndarray]:
    """Detections in network-input pixels (identity meta), to compare two networks by what they find."""
    values = [torch.from_numpy(np.asarray(h, np.float32)) for h in (heads.values() if isinstance(heads, dict) else heads)]
    batch = values[0].shape[0]
    affine = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(batch, 2, 3)
    with torch.inference_mode():
        out = CenterNetDecoder()(*values, affine, torch.full((batch, 2), float(size)))
    return dict(zip([pipeline.BOXES, pipeline.SCORES, pipeline.CLASSES], (t.numpy() for t in out)))


def calibration_feeds(options: Options, batch: int = 8) -> list[dict[str, np.ndarray]]:
    """Real images through the served preprocess (the TensorFlow graph): the calibration set is
    ``--calibration-dir``, or the example's generated validation split (seed 2)."""
    from detection.preprocess import TensorFlowPreprocess

    if options.calibration_dir is not None:
        files = sorted(p for p in Path(options.calibration_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        images = [p.read_bytes() for p in files[:options.calibration_images]]
    else:
        images = [dataset.generate(dataset.SPLIT_SEEDS["val"], i).jpeg for i in range(options.calibration_images)]
    if not images:
        raise ValueError(f"no calibration images in {options.calibration_dir}")
    preprocess = TensorFlowPreprocess(options.input_size)
    return [{pipeline.IMAGE: preprocess(images[i:i + batch])[0]} for i in range(0, len(images), batch)]


def latency_ms(model: bytes, feed: dict[str, np.ndarray], runs: int = 3) -> float:
    """Median latency of one ONNX Runtime run on this CPU (after a warm-up run)."""
    import time

    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    session.run(None, feed)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - began) * 1000)
    return float(np.median(times))


def network_stage(options: Options, network: torch.nn.Module, image: np.ndarray, rows: list) -> repository.Model:
    """PyTorch -> the requested form: TorchScript, or ONNX -> simplified ONNX -> ONNX, INT8 QDQ ONNX or a
    TensorRT plan; every form is checked against the one it was made from."""
    example = torch.from_numpy(image)
    with torch.inference_mode():
        reference = dict(zip(pipeline.HEADS, (t.numpy() for t in network(example))))
    size, fmt = options.input_size, options.network_format
    out = size // pipeline.OUTPUT_STRIDE
    num_classes = reference["hm"].shape[1]
    common = dict(max_batch_size=options.max_batch_size,
                  inputs=[config.Tensor(pipeline.IMAGE, np.float32, [3, size, size])],
                  outputs=[config.Tensor(name, np.float32, [channels, out, out])
                           for name, channels in zip(pipeline.HEADS, (num_classes, 2, 2))],
                  dynamic_batching=config.DynamicBatching(max_queue_delay_us=2000))
    gpu = [config.Instances(options.network_instances, kind="gpu", gpus=options.gpus)]
    # On a GPU the first run of each batch size in each instance's process is slow (kernels load,
    # cuDNN chooses algorithms): the server runs the small ones before it reports ready. Not all of
    # them: each process's allocator keeps the memory of the largest batch it ran (batches 1-32 on 8
    # instances left 74.5 GB of an H100 in use).
    warmed = dict(common, warmup_batch_sizes=range(1, min(options.warmup_max_batch, options.max_batch_size) + 1))
    if fmt == "torchscript":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if options.gpus and device == "cpu":
            raise ValueError("--gpus: there is no CUDA GPU here; the GPU form of TorchScript (FP16) is traced on a GPU")
        if any(g >= torch.cuda.device_count() for g in options.gpus):
            raise ValueError(f"--gpus {','.join(map(str, options.gpus))}: this machine has "
                             f"{torch.cuda.device_count()} GPU(s), numbered from 0")
        data = torchscript.export(network, [example], device, half=device == "cuda")
        traced = dict(zip(pipeline.HEADS, (t.float().cpu().numpy() for t in torchscript.run(data, [example], device))))
        if device == "cpu":
            rows += verify.compare("network: PyTorch vs TorchScript", reference, traced, NETWORK_TOLERANCE)
            return repository.Model(config.model_config(pipeline.NETWORK, platform="pytorch_libtorch",
                                                        instances=[config.Instances(options.network_instances)],
                                                        **common), data)
        rows += verify.compare_detections("network: PyTorch vs TorchScript FP16 (peaks)",
                                          centres(decoded(reference, size)), centres(decoded(traced, size)), **REDUCED)
        return repository.Model(config.model_config(pipeline.NETWORK, platform="pytorch_libtorch", instances=gpu,
                                                    **warmed), data)

    exported = trtis_onnx.export(network, [example], [pipeline.IMAGE], list(pipeline.HEADS))
    feeds = {pipeline.IMAGE: image}
    exported_outputs = trtis_onnx.run(exported, feeds)
    rows += verify.compare("network: PyTorch vs ONNX", reference, exported_outputs, NETWORK_TOLERANCE)
    simplified = trtis_onnx.simplify(exported)
    rows += verify.compare("network: ONNX vs simplified", exported_outputs, trtis_onnx.run(simplified, feeds),
                           NETWORK_TOLERANCE)
    fp32 = simplified.SerializeToString()

    def int8(form: str) -> bytes:
        quantized = quantize.quantize_int8(simplified, calibration_feeds(options), options.calibration_method,
                                           options.calibration_cache, form=form)
        left = quantize.float_ops(quantized)
        print(f"INT8, {form} form ({options.calibration_method}, {options.calibration_images} images); left in "
              f"floating point: {', '.join(left) or 'nothing'} (the output layers: their logits need more than 256 levels)")
        data = quantized.SerializeToString()
        rows.extend(verify.compare_detections("network: ONNX vs INT8 ONNX (peaks)", centres(decoded(exported_outputs, size)),
                                              centres(decoded(trtis_onnx.run(data, feeds), size)), **REDUCED))
        return data

    if fmt == "auto":
        reason = tensorrt.available()
        if reason is None:
            fmt = "tensorrt"
            print("Network format auto: tensorrt (TensorRT and a GPU are present; INT8 from the QDQ model)")
        else:
            candidate = int8("cpu")
            fast, slow = latency_ms(candidate, feeds), latency_ms(fp32, feeds)
            fmt = "onnx-int8" if fast < slow else "onnx"
            print(f"Network format auto: {fmt} (TensorRT unusable: {reason}; on this CPU one batch of "
                  f"{len(image)} took {fast:.0f} ms in INT8 and {slow:.0f} ms in FP32)")
            if fmt == "onnx-int8":
                fp32 = candidate
    elif fmt == "onnx-int8":
        fp32 = int8(options.int8_form)
    if fmt in ("onnx", "onnx-int8"):
        if options.gpus:
            raise ValueError("--gpus: the ONNX network runs on the CPU (ONNX Runtime); use --network-format "
                             "torchscript or tensorrt to serve it on GPUs")
        return repository.Model(config.model_config(pipeline.NETWORK, platform="onnxruntime_onnx",
                                                    instances=[config.Instances(options.network_instances)],
                                                    **common), fp32)
    if tensorrt.available() is not None:
        raise tensorrt.TensorRTUnavailable(f"cannot build a TensorRT plan: {tensorrt.available()}")
    plan = tensorrt.build_plan(int8("tensorrt"), pipeline.IMAGE, [3, size, size], options.max_batch_size,
                               timing_cache=options.calibration_cache / "tensorrt.timing-cache")
    return repository.Model(config.model_config(pipeline.NETWORK, platform="tensorrt_plan", instances=gpu, **warmed),
                            plan)


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
        instances=[config.Instances(options.postprocess_instances)],
        dynamic_batching=config.DynamicBatching(max_queue_delay_us=1000),
        parameters={"intra_op_thread_count": 1})
    return repository.Model(model, simplified.SerializeToString(),
                            files={"labels.txt": ("\n".join(class_names) + "\n").encode()})


def convert(options: Options) -> list[verify.Comparison]:
    """Run every stage and write the repository; raises ``VerificationError`` naming a stage that disagrees."""
    if options.network_format not in NETWORK_FORMATS:
        raise ValueError(f"--network-format must be one of {', '.join(NETWORK_FORMATS)}")
    if options.checkpoint is not None:
        network, spec = load_network(options.checkpoint)
    else:
        print(f"Using seeded random weights (seed {options.random_init}): the detections will be meaningless")
        network, spec = load_network(None, NetworkSpec(DEFAULT_CLASSES), seed=options.random_init or 0)
    images = sample_images(options.check_images)
    reference = InProcessPipeline(network, options.input_size)
    rows: list[verify.Comparison] = []
    with tqdm(total=4, desc="convert", unit="stage") as progress:
        progress.set_postfix_str("preprocess")
        preprocess = preprocess_stage(options, images, rows)
        progress.update()
        progress.set_postfix_str("network")
        image, meta_affine, meta_size = reference.preprocess(images)
        network_model = network_stage(options, network, image, rows)
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
    # Defaults: the best of docs/performance/tune-cpu.md (2 CPU cores); tune.sh finds them for another machine.
    parser.add_argument("--preprocess-instances", type=int, default=2)
    parser.add_argument("--network-instances", type=int, default=2, help="per GPU where the network runs on GPUs")
    parser.add_argument("--postprocess-instances", type=int, default=1)
    parser.add_argument("--gpus", type=_gpu_list, default=(), metavar="0,1,...",
                        help="GPUs the network's instances are spread over (torchscript, tensorrt; default: all)")
    parser.add_argument("--warmup-max-batch", type=int, default=4, metavar="N",
                        help="GPU networks: warm every instance up at batch sizes 1..N before serving (0: none)")
    parser.add_argument("--network-format", default="onnx", choices=NETWORK_FORMATS,
                        help="onnx (FP32), onnx-int8 (calibrated QDQ), torchscript (FP16 on CUDA, else FP32), tensorrt "
                             "(a plan from the QDQ model; needs TensorRT and a GPU), auto (tensorrt where possible, else "
                             "the faster ONNX form measured on this machine)")
    parser.add_argument("--calibration-images", type=int, default=64, help="INT8: images to calibrate with")
    parser.add_argument("--calibration-dir", type=Path, help="INT8: folder of calibration images "
                        "(default: the example's generated validation split)")
    parser.add_argument("--calibration-method", default="minmax", choices=sorted(quantize.METHODS))
    parser.add_argument("--int8-form", default="cpu", choices=sorted(quantize.FORMS),
                        help="onnx-int8: cpu (U8S8, fast in ONNX Runtime) or tensorrt (symmetric S8S8 QDQ)")
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
                      args.preprocess_instances, args.network_instances, args.postprocess_instances, args.gpus,
                      args.warmup_max_batch, args.network_format, args.preprocess_format, tuple(args.check_images),
                      args.calibration_images, args.calibration_dir, args.calibration_method, args.int8_form)
    try:
        rows = convert(options)
    except (verify.VerificationError, FileNotFoundError, ValueError, tensorrt.TensorRTUnavailable) as error:
        print(f"convert.sh: {error}", file=sys.stderr)
        return 1
    print(verify.table(_largest(rows)))
    print(f"Model repository written to {options.output} ({', '.join(sorted(p.name for p in options.output.iterdir() if p.is_dir()))})")
    return 0


def _gpu_list(text: str) -> tuple[int, ...]:
    try:
        gpus = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of GPU numbers: {text!r} (example: 0,1,2,3)") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"GPU numbers must be distinct and >= 0: {text!r}")
    return gpus


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
