"""Where the served GPU pipeline's mAP loss comes from: each difference from the reference, scored alone.

The GPU pipeline (nvJPEG decode, the torch warp sampling in FP16, the network in FP16 compiled by
inductor, decoding in FP32) scores a few tenths of a point of mAP below the FP32 pipeline in process
(OpenCV decode and warp, FP32 network). This scores the same images in process through the
reference, then with the GPU path's differences swapped in, one at a time and together. With
``--device cuda`` every variant runs (the FP32 rows with TF32 off, so FP32 means FP32); on the CPU
the variants that need a GPU (nvJPEG, FP16 sampling, the compiled network) are listed as not run.

    example/detection/python.sh -m detection.accuracy_split [--device cuda] [--num-images 200] [--report reports/accuracy-split.md]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from detection import dataset, gpu_preprocess, pipeline
from detection.accuracy import OnDevice, in_process, score
from detection.network import DEFAULT_CHECKPOINT, load_network
from detection.reference import Preprocess, ReferencePipeline
from trtis import quiet
from trtis.export.torchscript import HalfPrecision


@dataclass(frozen=True)
class Warp:
    """The GPU preprocess code's settings (``gpu_preprocess.preprocess``); None is the OpenCV reference."""
    nvjpeg: bool
    sample_dtype: torch.dtype

    @property
    def needs_gpu(self) -> bool:
        return self.nvjpeg or self.sample_dtype != torch.float32


OPENCV = None
TORCH_WARP = Warp(nvjpeg=False, sample_dtype=torch.float32)
TORCH_WARP_FP16 = Warp(nvjpeg=False, sample_dtype=torch.float16)
SERVED_PREPROCESS = Warp(nvjpeg=True, sample_dtype=torch.float16)

@dataclass(frozen=True)
class Variant:
    name: str
    preprocess: Warp | None
    network: str  # "fp32"; "fp16": the served FP16 form, eager; "compiled": that form by torch.compile

    @property
    def needs_gpu(self) -> bool:
        return self.network == "compiled" or (self.preprocess is not None and self.preprocess.needs_gpu)


VARIANTS = (
    Variant("reference: OpenCV preprocess, FP32 network", OPENCV, "fp32"),
    Variant("torch warp (OpenCV decode, FP32 sampling), FP32 network", TORCH_WARP, "fp32"),
    Variant("torch warp, FP16 sampling (OpenCV decode), FP32 network", TORCH_WARP_FP16, "fp32"),
    Variant("nvJPEG decode + torch warp in FP16 (the served preprocess), FP32 network", SERVED_PREPROCESS, "fp32"),
    Variant("OpenCV preprocess, FP16 network, eager (FP32 decoding)", OPENCV, "fp16"),
    Variant("OpenCV preprocess, FP16 network compiled (torch.compile, as served)", OPENCV, "compiled"),
    Variant("torch warp (OpenCV decode, FP32 sampling) + FP16 network, eager", TORCH_WARP, "fp16"),
    Variant("the served pipeline: nvJPEG + FP16 warp + compiled FP16 network", SERVED_PREPROCESS, "compiled"),
)


def torch_preprocess(size: int, device: str, warp: Warp) -> Preprocess:
    """The GPU preprocess model's code on ``device`` with ``warp``'s settings, as ReferencePipeline calls a
    preprocess: encoded images -> image, meta_affine, meta_size (in host memory)."""
    def run(images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        errors, image, meta_affine, meta_size = gpu_preprocess.preprocess(
            images, size, device, pipeline.MAX_PIXELS, nvjpeg=warp.nvjpeg, sample_dtype=warp.sample_dtype)
        failed = [str(error) for error in errors if error is not None]
        if failed:
            raise ValueError(failed[0])
        return image.cpu().numpy(), meta_affine, meta_size
    return run


def half_network(network: torch.nn.Module, device: str = "cpu") -> torch.nn.Module:
    """A copy of ``network`` in FP16 taking and returning FP32, the casts of the served compiled network
    (``DecodedDetector.half_network``: input to half, heads back to float32). Channels-last, as the
    compiled network runs on a GPU: on a CPU, FP16 convolutions in NCHW took 125 s per image, 2 s in
    channels-last."""
    return HalfPrecision(copy.deepcopy(network).to(device, memory_format=torch.channels_last))


def half_unavailable() -> str | None:
    """Why this PyTorch cannot run FP16 convolutions on the CPU, or None when it can."""
    conv = torch.nn.Conv2d(3, 4, 3).half().to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            conv(torch.zeros(1, 3, 8, 8, dtype=torch.float16))
    except RuntimeError as error:
        return f"PyTorch {torch.__version__} cannot run FP16 convolutions on this CPU ({error})"
    return None


def networks(network: torch.nn.Module, device: str) -> dict[str, torch.nn.Module | str]:
    """Each of the variants' networks on ``device``, or the reason it cannot run there. The compiled one is
    ``torch.compile`` (inductor, dynamic batch) of the FP16 form, as the served ``compiled`` format
    compiles its exported program of that form."""
    on_gpu = device != "cpu"
    fp32 = copy.deepcopy(network).to(device, memory_format=torch.channels_last if on_gpu else torch.contiguous_format)
    reason = None if on_gpu else half_unavailable()
    fp16 = reason or half_network(network, device)
    return {"fp32": OnDevice(fp32, device), "fp16": reason or OnDevice(fp16, device),
            "compiled": OnDevice(torch.compile(fp16, dynamic=True), device) if on_gpu else "needs a CUDA device"}


def device_unavailable(device: str) -> str | None:
    """Why ``device`` cannot run the split here (not cpu or cuda[:N], or no such GPU), or None."""
    try:
        where = torch.device(device)
    except RuntimeError as error:
        return f"not a device name ({error}); use cpu or cuda"
    if where.type == "cpu":
        return None
    if where.type != "cuda":
        return f"{where.type} is not supported here; use cpu or cuda"
    count = torch.cuda.device_count()
    if (where.index or 0) >= count:
        return f"PyTorch {torch.__version__} sees {count} CUDA device(s) here"
    return None


def split(network: torch.nn.Module, images: list[bytes], ground_truth: dict, size: int,
          device: str = "cpu") -> dict[str, dict]:
    """Each variant's scores (``accuracy.score``) and ``seconds``, or ``skipped`` with the reason."""
    models = networks(network, device)
    rows = {}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    # FP32 rows in FP32: cuDNN takes TF32 for convolutions by default (restored after)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for variant in tqdm(VARIANTS, desc="variants", unit="variant", leave=False):
            model = models[variant.network]
            if variant.needs_gpu and device == "cpu":
                model = "needs a CUDA device"
            if isinstance(model, str):
                rows[variant.name] = {"skipped": model}
                continue
            preprocess = variant.preprocess and torch_preprocess(size, device, variant.preprocess)
            began = time.perf_counter()
            results = in_process(ReferencePipeline(model, size, preprocess), images)
            rows[variant.name] = {**score(ground_truth, results), "seconds": time.perf_counter() - began}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return rows


def table(rows: dict[str, dict]) -> str:
    """mAPs and their difference in points from the first row (the reference)."""
    reference = next(iter(rows.values()))
    lines = ["| variant | mAP@[.5:.95] | mAP@.5 | Δ mAP@[.5:.95] (points) | Δ mAP@.5 (points) | wall time (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        if "skipped" in row:
            lines.append(f"| {name} | not run: {row['skipped']} | | | | |")
            continue
        lines.append(f"| {name} | {row['map']:.4f} | {row['map50']:.4f} | {100 * (row['map'] - reference['map']):+.2f} | "
                     f"{100 * (row['map50'] - reference['map50']):+.2f} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=dataset.SPLIT_SEEDS["test"], help="dataset seed (test split: 3)")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--input-size", type=int, default=pipeline.INPUT_SIZE)
    parser.add_argument("--device", default="cpu", help="where the preprocess code and the networks run: cpu, or "
                        "cuda / cuda:N (every variant)")
    parser.add_argument("--report", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--verbose", action="store_true", help="log every step, third-party libraries' notices too")
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error(f"--num-images must be at least 1, not {args.num_images}")
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} not found")
    reason = device_unavailable(args.device)
    if reason:
        parser.error(f"--device {args.device}: {reason}")
    quiet.setup(args.verbose)
    ground_truth = dataset.coco_split(args.seed, args.num_images)
    images = [dataset.generate(args.seed, i).jpeg for i in range(args.num_images)]
    network, _ = load_network(args.checkpoint)
    text = table(split(network, images, ground_truth, args.input_size, args.device))
    where = (f"on {torch.cuda.get_device_name(args.device)}" if args.device != "cpu"
             else f"on the CPU ({torch.get_num_threads()} threads)")
    heading = (f"mAP of `{args.checkpoint.name}` on {args.num_images} generated images (seed {args.seed}), input "
               f"{args.input_size}, in process {where}, PyTorch {torch.__version__}; COCO metrics by pycocotools.")
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(f"{heading}\n\n{text}\n")
        print(f"Report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
