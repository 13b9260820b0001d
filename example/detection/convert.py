"""``convert.sh``: a CenterNet checkpoint -> the Triton model repository of the detection ensemble.

Stages: preprocess (TensorFlow graph, OpenCV Python model or the GPU preprocess, checked against the
OpenCV reference), network (the format asked for, built and checked by ``trtis.export``), postprocess
(the decoder as ONNX, checked), then the ensemble and the repository (configs by trtis, validated,
written atomically). On a GPU with the compiled network the decoder runs inside the network, and the
GPU preprocess too (``--preprocess-in-network``): the ensemble then has that one model.
This module only describes CenterNet: the converting, checking and configuring is the library's.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from detection import dataset, letterbox, matching, pipeline
from detection.reference import ReferencePipeline
from detection.network import DEFAULT_CHECKPOINT, NetworkSpec, load_network
from detection.postprocess import CenterNetDecoder, DecodedDetector
from trtis import config, export, repository, verify
from trtis.export import quantize, tensorrt

log = logging.getLogger("convert")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TEST_DATA = ROOT / "example" / "test-data"
DEFAULT_CLASSES = ["circle", "rectangle", "triangle", "star", "cross", "ring"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Largest differences accepted between a stage and its source.
# OpenCV's warp places pixels to 1/32 px (fixed point) where TensorFlow computes in float, so a
# full-contrast edge may move by up to 255/32 grey levels: 0.11 after normalisation.
PREPROCESS_TOLERANCE = {pipeline.IMAGE: 0.12, pipeline.META_AFFINE: 1e-4, pipeline.META_SIZE: 0.0}
# nvJPEG and libjpeg upsample chroma differently: on an H100 the test JPEGs decoded 0.02-1.1 grey levels
# apart on average, up to 68 at single pixels on sharp colour edges (0.74 after normalisation). So the
# image's mean difference is bounded instead, loosely: the 7x5 noise JPEG among the check images,
# upscaled 73 times, differs by 0.078 on average. The served mAP is the judge (docs/performance/h100-gpu.md).
GPU_PREPROCESS_TOLERANCE = {**PREPROCESS_TOLERANCE, pipeline.IMAGE: 1.0}
GPU_PREPROCESS_MEAN_TOLERANCE = 0.1
NETWORK_TOLERANCE = 2e-3
GPU_NETWORKS = ("compiled", "torchscript", "tensorrt", "auto")
# Network instances unless --network-instances says: on the CPU one, whose intra-op threads then use
# every core (BatchedModel gives a CPU instance cpu_count // instances threads): on 2 cores one request
# in flight on one of two single-thread instances ran at 0.57x the pipeline in process, and two
# instances of two threads each fought over the cores (docs/performance/tune-cpu.md). Per GPU: two.
CPU_NETWORK_INSTANCES = 1
GPU_NETWORK_INSTANCES = 2
# With the preprocess inside, per GPU: three instances of max batch 32, the winner of tune.sh's sweep on
# an H100 (2 / 3 / 4 instances, max batch 32 / 64, delay 0 / 2 ms; docs/performance/tune-h100-gpu.md).
# Max batch 64 served as much (within 6% at every level, same lease) with 3,458 MiB more at peak.
IN_NETWORK_INSTANCES = 3
IN_NETWORK_MAX_BATCH = 32
# The other pipelines: the CPU sweep ran at 8 (docs/performance/tune-cpu.md) without varying it; the
# two-model GPU ensemble was measured at 64 (tools/device: MAX_BATCH=64).
DEFAULT_MAX_BATCH = 8
# Dynamic-batching queue delay of the models on the CPU: waiting for a second request there only
# delays the first, as the network keeps every core busy with one (docs/performance/tune-cpu.md).
CPU_QUEUE_DELAY_US = 0
# What a model's queue holds before the server refuses more at once (Overloaded): on the CPU two
# batches, as a burst of large images queued without end held a GB of request memory for a minute
# (docs/security.md); on a GPU enough for the benchmarks' 256 requests in flight.
CPU_QUEUE_BATCHES = 2
GPU_QUEUE_SIZE = 512
# How long a request may wait in a CPU model's queue: a batch of the network at input 512 takes
# seconds on a few cores, so the library's 10 s would refuse requests of an ordinary evaluation.
CPU_QUEUE_TIMEOUT_US = 60_000_000
HALF_INPUT = ("compiled", "torchscript")  # the network formats that cast their input to FP16 themselves
RAW_INPUT = config.Tensor(pipeline.RAW_IMAGE, np.object_, [1])  # what clients send: one encoded image


@dataclass
class Options:
    output: Path
    checkpoint: Path | None = None
    random_init: int | None = None
    input_size: int = pipeline.INPUT_SIZE
    max_batch_size: int | None = None  # None: IN_NETWORK_MAX_BATCH with the preprocess inside, else DEFAULT_MAX_BATCH
    preprocess_instances: int = 2
    network_instances: int | None = None  # None: CPU_NETWORK_INSTANCES or GPU_NETWORK_INSTANCES
    postprocess_instances: int = 1
    gpus: tuple[int, ...] = ()
    warmup_max_batch: int = 4
    network_format: str = "onnx"
    preprocess_format: str = "tensorflow"
    preprocess_in_network: bool | None = None  # None: where possible (GPU preprocess, compiled network)
    max_pixels: int = pipeline.MAX_PIXELS
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
    outputs = [config.Tensor(pipeline.IMAGE, image_dtype(options), [3, size, size]),
               config.Tensor(pipeline.META_AFFINE, np.float32, [2, 3]),
               config.Tensor(pipeline.META_SIZE, np.float32, [2])]
    common = dict(max_batch_size=batching, inputs=[RAW_INPUT],
                  outputs=outputs, instances=[config.Instances(options.preprocess_instances)],
                  dynamic_batching=batching_for(options.preprocess_format == "gpu", 1000, batching))
    names = [pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE]
    parameters = {"input_size": size, "max_pixels": options.max_pixels}
    if options.preprocess_format == "python":
        model = config.model_config(pipeline.PREPROCESS, backend="python", parameters=parameters, **common)
        return repository.Model(model, HERE / "opencv_preprocess_model.py", files={"1/letterbox.py": HERE / "letterbox.py"})
    if options.preprocess_format == "gpu":
        from detection import gpu_preprocess

        for data in images:
            _, image, meta_affine, meta_size = gpu_preprocess.preprocess([data], size, "cuda", options.max_pixels)
            reference = dict(zip(names, letterbox.preprocess(data, size)))
            served = dict(zip(names, (image[0].cpu().numpy(), meta_affine[0], meta_size[0])))
            rows += verify.compare("preprocess: GPU vs OpenCV", reference, served, GPU_PREPROCESS_TOLERANCE)
            rows += verify.compare_mean("preprocess: GPU vs OpenCV", {pipeline.IMAGE: reference[pipeline.IMAGE]},
                                        {pipeline.IMAGE: served[pipeline.IMAGE]}, GPU_PREPROCESS_MEAN_TOLERANCE)
        common["instances"] = [config.Instances(options.preprocess_instances, kind="gpu", gpus=options.gpus)]
        model = config.model_config(pipeline.PREPROCESS, backend="python", parameters=parameters, **common)
        return repository.Model(model, HERE / "gpu_preprocess_model.py", files={
            "1/letterbox.py": HERE / "letterbox.py", "1/gpu_preprocess.py": HERE / "gpu_preprocess.py"})
    from trtis.export import tensorflow as trtis_tf
    from detection.preprocess import preprocess_graph

    graph = preprocess_graph(size, options.max_pixels)
    for data in images:
        served = trtis_tf.run(graph, {pipeline.RAW_IMAGE: np.array([[data]], dtype=object)}, names)
        reference = letterbox.preprocess(data, size)
        rows += verify.compare("preprocess: TensorFlow vs OpenCV", dict(zip(names, reference)),
                               {n: v[0] for n, v in zip(names, served)}, PREPROCESS_TOLERANCE)
    model = config.model_config(pipeline.PREPROCESS, platform="tensorflow_graphdef", **common)
    return repository.Model(model, graph.SerializeToString())


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


def image_dtype(options: Options) -> type:
    """What the preprocess hands the network: FP16 from the GPU preprocess to a network that runs in
    FP16 anyway (half the bytes through Triton's memory pool), FP32 otherwise."""
    return np.float16 if options.preprocess_format == "gpu" and options.network_format in HALF_INPUT else np.float32


def batching_for(on_gpu: bool, gpu_delay_us: int, max_batch_size: int) -> config.DynamicBatching:
    """A model's dynamic batching: on a GPU a short wait fills batches; on the CPU none (CPU_QUEUE_DELAY_US).
    Its queue holds GPU_QUEUE_SIZE requests on a GPU, CPU_QUEUE_BATCHES batches on the CPU (for up to
    CPU_QUEUE_TIMEOUT_US); more are refused."""
    if on_gpu:
        return config.DynamicBatching(max_queue_delay_us=gpu_delay_us, max_queue_size=GPU_QUEUE_SIZE)
    return config.DynamicBatching(max_queue_delay_us=CPU_QUEUE_DELAY_US, max_queue_size=CPU_QUEUE_BATCHES * max_batch_size,
                                  queue_timeout_us=CPU_QUEUE_TIMEOUT_US)


def fused(options: Options) -> bool:
    """Whether the decoding runs inside the network model: for the compiled network on a GPU."""
    return options.network_format == "compiled" and network_on_gpu(options)


def network_stage(options: Options, network: torch.nn.Module, image: np.ndarray) -> export.Exported:
    """The network in the format asked for (``trtis.export``), checked on the sample images: raw heads
    where the precision is kept, heatmap peaks where it is lowered (INT8, FP16)."""
    return export.export(
        network, [torch.from_numpy(image)], [pipeline.IMAGE], list(pipeline.HEADS), options.network_format,
        name=pipeline.NETWORK, max_batch_size=options.max_batch_size, instances=options.network_instances,
        gpus=options.gpus, warmup_max_batch=options.warmup_max_batch,
        inputs=[config.Tensor(pipeline.IMAGE, image_dtype(options), list(image.shape[1:]))],
        dynamic_batching=batching_for(network_on_gpu(options), 2000, options.max_batch_size),
        compare=verify.within(NETWORK_TOLERANCE), compare_reduced=matching.same_peaks,
        calibration=lambda: calibration_feeds(options), calibration_method=options.calibration_method,
        int8_form=options.int8_form, cache_dir=options.calibration_cache)


def decoded_network_stage(options: Options, network: torch.nn.Module, image: np.ndarray,
                          meta: tuple[np.ndarray, np.ndarray], class_names: list[str]) -> export.Exported:
    """The network with its decoding in ``options.network_format`` (``fused``: compiled for the GPU,
    FP16 network, FP32 decoding); checked against the FP32 PyTorch pipeline on its peaks (centres
    within 1.5 heatmap cells, scaled to the check images' original pixels) and scores."""
    scale = float(meta[1].max()) / options.input_size  # original pixels per network-input pixel, at most
    tolerance = {**matching.REDUCED, "box_tolerance": matching.REDUCED["box_tolerance"] * max(scale, 1.0)}

    def same_peaks(stage, reference, candidate):
        return matching.compare_detections(stage, matching.centres(reference), matching.centres(candidate), **tolerance)

    return export.export(
        DecodedDetector(network), [torch.from_numpy(image), *(torch.from_numpy(m) for m in meta)],
        [pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE], [pipeline.BOXES, pipeline.SCORES, pipeline.CLASSES],
        options.network_format, name=pipeline.NETWORK, max_batch_size=options.max_batch_size,
        instances=options.network_instances, gpus=options.gpus, warmup_max_batch=options.warmup_max_batch,
        dynamic_batching=batching_for(network_on_gpu(options), 2000, options.max_batch_size),
        inputs=[config.Tensor(pipeline.IMAGE, image_dtype(options), list(image.shape[1:])),
                config.Tensor(pipeline.META_AFFINE, np.float32, [2, 3]), config.Tensor(pipeline.META_SIZE, np.float32, [2])],
        outputs=detection_outputs(), files=labels(class_names), parameters={"host_outputs": "*"},
        half_module=DecodedDetector.half_network, compare_reduced=same_peaks, cache_dir=options.calibration_cache)


def with_preprocess(network: repository.Model, preprocess: repository.Model) -> repository.Model:
    """The network model running the GPU preprocess as its prepare step (``--preprocess-in-network``):
    each instance decodes and warps its requests' images on its own GPU, in its own process, so an
    image never crosses processes or cards (in the ensemble any preprocess instance may feed any
    network instance). The preprocess model's checks still ran; its settings and files come along."""
    prepared = config.with_prepare_step(network.config, "gpu_preprocess.py", [RAW_INPUT])
    for key, value in preprocess.config.parameters.items():
        prepared.parameters[key].CopyFrom(value)
    return repository.Model(prepared, network.artefact, files={**network.files, **preprocess.files})


def detection_outputs() -> list[config.Tensor]:
    return [config.Tensor(pipeline.BOXES, np.float32, [pipeline.TOP_K, 4]),
            config.Tensor(pipeline.SCORES, np.float32, [pipeline.TOP_K]),
            config.Tensor(pipeline.CLASSES, np.int32, [pipeline.TOP_K], label_filename="labels.txt")]


def labels(class_names: list[str]) -> dict[str, bytes]:
    return {"labels.txt": ("\n".join(class_names) + "\n").encode()}


def postprocess_stage(options: Options, heads: tuple[torch.Tensor, ...], meta: tuple[np.ndarray, np.ndarray],
                      class_names: list[str], on_gpu: bool = False) -> export.Exported:
    """The CenterNet decoder, for any heatmap size; ``classes`` carries the label file. Beside a GPU
    network it runs on the GPU too (TorchScript, FP32), so only the boxes, scores and classes (a few
    KB) go back to host memory; else it is ONNX on the CPU."""
    names = [*pipeline.HEADS, pipeline.META_AFFINE, pipeline.META_SIZE]
    outputs = [pipeline.BOXES, pipeline.SCORES, pipeline.CLASSES]
    dynamic = {name: {0: "batch"} for name in [*names, *outputs]}
    dynamic.update({head: {0: "batch", 2: "height", 3: "width"} for head in pipeline.HEADS})
    num_classes, out = heads[0].shape[1], options.input_size // pipeline.OUTPUT_STRIDE
    return export.export(
        CenterNetDecoder(), [*heads, *(torch.from_numpy(m) for m in meta)], names, outputs,
        "torchscript" if on_gpu else "onnx", gpus=options.gpus if on_gpu else (), half=False,
        name=pipeline.POSTPROCESS, max_batch_size=options.max_batch_size, instances=options.postprocess_instances,
        dynamic_axes=dynamic,
        dynamic_batching=batching_for(on_gpu, 1000, options.max_batch_size),
        inputs=[config.Tensor(pipeline.HEADS[0], np.float32, [num_classes, out, out]),
                config.Tensor(pipeline.HEADS[1], np.float32, [2, out, out]),
                config.Tensor(pipeline.HEADS[2], np.float32, [2, out, out]),
                config.Tensor(pipeline.META_AFFINE, np.float32, [2, 3]),
                config.Tensor(pipeline.META_SIZE, np.float32, [2])],
        outputs=detection_outputs(), parameters={} if on_gpu else {"intra_op_thread_count": 1}, files=labels(class_names),
        compare=matching.same_detections)


def validate(options: Options) -> None:
    """Refuse options (their defaults filled in: ``with_defaults``) and files that cannot work, before any work."""
    if options.input_size % 32 or options.input_size < 32:
        raise ValueError(f"--input-size must be a positive multiple of 32 (DLA-34 halves it five times), "
                         f"not {options.input_size}")
    if options.checkpoint is not None and not Path(options.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {options.checkpoint} not found")
    missing = [str(p) for p in options.check_images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"--check-images: {', '.join(missing)} not found")
    if options.preprocess_format == "gpu" and not torch.cuda.is_available():
        raise ValueError("--preprocess-format gpu decodes with nvJPEG on a CUDA GPU, and this machine has none: "
                         "use tensorflow or python")
    if options.preprocess_format == "gpu" and options.network_format not in GPU_NETWORKS:
        raise ValueError(f"--preprocess-format gpu leaves the image on the GPU for a GPU network: use --network-format "
                         f"{' or '.join(GPU_NETWORKS)}, not {options.network_format}")
    if options.preprocess_in_network and (options.preprocess_format, options.network_format) != ("gpu", "compiled"):
        raise ValueError("--preprocess-in-network runs the GPU preprocess inside the compiled network, which decodes "
                         "the boxes itself: add --preprocess-format gpu --network-format compiled")
    if options.calibration_dir is not None and not Path(options.calibration_dir).is_dir():
        raise FileNotFoundError(f"--calibration-dir {options.calibration_dir} is not a folder")
    for name in ("preprocess_instances", "network_instances", "postprocess_instances", "max_batch_size", "max_pixels"):
        if getattr(options, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    export.validate(options.network_format, export.ExportOptions(
        pipeline.NETWORK, max_batch_size=options.max_batch_size, instances=options.network_instances,
        gpus=options.gpus, calibration=(), calibration_method=options.calibration_method,
        int8_form=options.int8_form), [pipeline.IMAGE], [None])


def network_on_gpu(options: Options) -> bool:
    """Whether the network will run on GPUs: a GPU format, or auto where CUDA is present."""
    if options.network_format in export.FORMATS:
        return export.FORMATS[options.network_format].kind(options.gpus) == "gpu"
    return torch.cuda.is_available()


def with_defaults(options: Options) -> Options:
    """``options`` with what was not given filled in: the preprocess goes inside the network where it
    can (the GPU preprocess before the compiled network: on one H100 it served 2,264 requests/s
    against 2,097 as two models, with p50 7.2 ms against 11.7 at 1 in flight, and two cards 2.0x one
    against 0.67x); the network's instance count and the max batch size depend on where it runs and what
    it holds."""
    if options.preprocess_in_network is None:
        possible = (options.preprocess_format, options.network_format) == ("gpu", "compiled")
        options = replace(options, preprocess_in_network=possible)
    if options.max_batch_size is None:
        largest = IN_NETWORK_MAX_BATCH if options.preprocess_in_network else DEFAULT_MAX_BATCH
        options = replace(options, max_batch_size=largest)
    if options.network_instances is not None:
        return options
    if options.preprocess_in_network:
        count = IN_NETWORK_INSTANCES
    else:
        count = GPU_NETWORK_INSTANCES if network_on_gpu(options) else CPU_NETWORK_INSTANCES
    return replace(options, network_instances=count)


def convert(options: Options) -> list[verify.Comparison]:
    """Run every stage and write the repository; raises ``VerificationError`` naming a stage that disagrees."""
    options = with_defaults(options)
    validate(options)
    if options.checkpoint is not None:
        network, spec = load_network(options.checkpoint)
    else:
        log.warning("Using seeded random weights (seed %s): the detections will be meaningless", options.random_init)
        network, spec = load_network(None, NetworkSpec(DEFAULT_CLASSES), seed=options.random_init or 0)
    images = sample_images(options.check_images)
    reference = ReferencePipeline(network, options.input_size)
    rows: list[verify.Comparison] = []
    with logging_redirect_tqdm(), tqdm(total=4, desc="convert", unit="stage") as progress:
        progress.set_postfix_str("preprocess")
        preprocess = preprocess_stage(options, images, rows)
        progress.update()
        progress.set_postfix_str("network")
        image, meta_affine, meta_size = reference.preprocess(images)
        if fused(options):
            network_model = decoded_network_stage(options, network, image, (meta_affine, meta_size), spec.class_names)
        else:
            network_model = network_stage(options, network, image)
        for note in network_model.notes:
            tqdm.write(f"{pipeline.NETWORK}: {note}")
        progress.update()
        progress.set_postfix_str("postprocess")
        exported = [network_model]
        if not fused(options):
            heads = reference.network_outputs(image)
            exported.append(postprocess_stage(options, heads, (meta_affine, meta_size), spec.class_names,
                                              on_gpu=network_model.kind == "gpu"))
        progress.update()
        rows += [row for stage in exported for row in stage.comparisons]
        verify.require(rows)
        progress.set_postfix_str("repository")
        repository.write_repository(options.output, repository_models(
            options, preprocess, [stage.model for stage in exported], spec.class_names))
        progress.update()
    return rows


def repository_models(options: Options, preprocess: repository.Model, stages: list[repository.Model],
                      class_names: list[str]) -> list[repository.Model]:
    """The models to write, the ensemble that chains them last: the preprocess before the network
    (and postprocess), or inside the network (``--preprocess-in-network``)."""
    models = list(stages)
    if options.preprocess_in_network:
        models[0] = with_preprocess(models[0], preprocess)
    else:
        models.insert(0, preprocess)
    ensemble = config.with_class_names(config.ensemble_config(pipeline.ENSEMBLE, [config.Step(m.config) for m in models]),
                                       class_names)
    return [*models, repository.Model(ensemble)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convert.sh", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help=f"official-format CenterNet dlav0_34 checkpoint, with <name>.json beside it naming the "
                             f"classes (default: {DEFAULT_CHECKPOINT.relative_to(ROOT)})")
    source.add_argument("--random-init", type=int, metavar="SEED", help="seeded random weights instead (for tests)")
    parser.add_argument("--output", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--input-size", type=int, default=pipeline.INPUT_SIZE)
    parser.add_argument("--max-batch-size", type=int, help=f"largest batch each model runs (default: {DEFAULT_MAX_BATCH}; "
                        f"{IN_NETWORK_MAX_BATCH} with the preprocess inside the network)")
    # CPU defaults: the best of docs/performance/tune-cpu.md (2 cores); tune.sh finds them for another machine.
    parser.add_argument("--preprocess-instances", type=int, default=2,
                        help="default: 2, so one image decodes while another waits (none of its own with "
                             "--preprocess-in-network)")
    parser.add_argument("--network-instances", type=int,
                        help=f"default: {CPU_NETWORK_INSTANCES} on the CPU, whose threads use every core (tune.sh "
                             f"measures others), {GPU_NETWORK_INSTANCES} per GPU where the network runs on GPUs, "
                             f"{IN_NETWORK_INSTANCES} per GPU with the preprocess inside")
    parser.add_argument("--postprocess-instances", type=int, default=1,
                        help="default: 1 (the decoder takes ~1 ms; none of its own where the network decodes, on a GPU "
                             "with --network-format compiled)")
    parser.add_argument("--gpus", type=_gpu_list, default=(), metavar="0,1,...",
                        help="GPUs the network's instances are spread over (torchscript, compiled, tensorrt; default: all)")
    parser.add_argument("--warmup-max-batch", type=int, default=4, metavar="N",
                        help="GPU networks: warm every instance up at batch sizes 1..N before serving (0: none)")
    parser.add_argument("--network-format", default="onnx", choices=export.CHOICES,
                        help="; ".join([f"{f.name}: {f.summary}" for f in export.FORMATS.values()] +
                                       ["auto: tensorrt where possible, compiled on a GPU without it, else the "
                                        "faster ONNX form measured here"]))
    parser.add_argument("--calibration-images", type=int, default=64, help="INT8: images to calibrate with")
    parser.add_argument("--calibration-dir", type=Path, help="INT8: folder of calibration images "
                        "(default: the example's generated validation split)")
    parser.add_argument("--calibration-method", default="minmax", choices=sorted(quantize.METHODS))
    parser.add_argument("--int8-form", default="cpu", choices=sorted(quantize.FORMS),
                        help="onnx-int8: cpu (U8S8, fast in ONNX Runtime) or tensorrt (symmetric S8S8 QDQ)")
    parser.add_argument("--preprocess-format", default="tensorflow", choices=["tensorflow", "python", "gpu"],
                        help="tensorflow: frozen GraphDef; python: OpenCV Python model (for images without TF); "
                             "gpu: nvJPEG decode and the warp on the GPU (Python model, torch and torchvision)")
    parser.add_argument("--preprocess-in-network", action=argparse.BooleanOptionalAction,
                        help="each network instance preprocesses its own requests' images, so an image never leaves "
                             "its GPU or its process (one model instead of two; default: on with --preprocess-format "
                             "gpu --network-format compiled, the only pair it works with)")
    parser.add_argument("--max-pixels", type=int, default=pipeline.MAX_PIXELS,
                        help="refuse images with more pixels than this, from their header, before decoding")
    parser.add_argument("--check-images", type=Path, nargs="*", default=(), help="images to verify each stage with")
    parser.add_argument("--verbose", action="store_true", help="log every step")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.random_init is not None:
        args.checkpoint = None
    args.check_images = tuple(args.check_images)
    options = Options(**{f.name: getattr(args, f.name) for f in fields(Options) if hasattr(args, f.name)})
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
