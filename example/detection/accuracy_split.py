"""Where the served GPU pipeline's mAP loss comes from, split on the CPU.

The GPU pipeline (nvJPEG decode, the torch warp, the network in FP16, decoding in FP32) scores a few
tenths of a point of mAP below the FP32 pipeline in process (OpenCV decode and warp, FP32 network).
This scores the same images in process through the reference, then with each difference of the GPU
path that a CPU can run swapped in: the GPU preprocess code (OpenCV's decode there, the grid_sample
warp), the network in FP16 as the served compiled network runs it (weights and input in half, heads
back to FP32 for the FP32 decoder), and both. What it cannot run is what the GPU alone does: nvJPEG's
decode, the warp sampling in FP16 on a GPU, the compiled kernels. The served loss the table leaves
unexplained is theirs.

    example/detection/python.sh -m detection.accuracy_split [--num-images 200] [--report reports/accuracy-split.md]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from detection import dataset, pipeline
from detection.accuracy import in_process, score
from detection.network import DEFAULT_CHECKPOINT, load_network
from detection.reference import Preprocess, ReferencePipeline
from detection.workload import GpuPreprocess
from trtis import quiet
from trtis.export.torchscript import HalfPrecision


@dataclass(frozen=True)
class Variant:
    name: str
    gpu_preprocess: bool  # the GPU preprocess code on the CPU instead of the OpenCV reference
    half: bool  # the network in FP16, as served


VARIANTS = (
    Variant("reference: OpenCV preprocess, FP32 network", gpu_preprocess=False, half=False),
    Variant("GPU preprocess code on the CPU (OpenCV decode, torch warp), FP32 network", gpu_preprocess=True, half=False),
    Variant("OpenCV preprocess, FP16 network (FP32 decoding)", gpu_preprocess=False, half=True),
    Variant("GPU preprocess code on the CPU + FP16 network", gpu_preprocess=True, half=True),
)


def gpu_preprocess_on_cpu(size: int) -> Preprocess:
    """The GPU preprocess model's code on the CPU (bench's in-process stand-in for it), as ReferencePipeline
    calls a preprocess: encoded images -> image, meta_affine, meta_size."""
    stand_in = GpuPreprocess(size, pipeline.MAX_PIXELS, "cpu")
    return lambda images: tuple(stand_in({pipeline.RAW_IMAGE: np.array(images, dtype=object)}).values())


def half_network(network: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``network`` in FP16 taking and returning FP32, the casts of the served compiled network
    (``DecodedDetector.half_network``: input to half, heads back to float32). Channels-last, as the
    compiled network runs on a GPU: on this CPU, FP16 convolutions in NCHW took 125 s per image, 2 s in
    channels-last."""
    return HalfPrecision(copy.deepcopy(network).to(memory_format=torch.channels_last))


def half_unavailable() -> str | None:
    """Why this PyTorch cannot run FP16 convolutions on the CPU, or None when it can."""
    conv = torch.nn.Conv2d(3, 4, 3).half().to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            conv(torch.zeros(1, 3, 8, 8, dtype=torch.float16))
    except RuntimeError as error:
        return f"PyTorch {torch.__version__} cannot run FP16 convolutions on this CPU ({error})"
    return None


def split(network: torch.nn.Module, images: list[bytes], ground_truth: dict, size: int) -> dict[str, dict]:
    """Each variant's scores (``accuracy.score``) and ``seconds``, or ``skipped`` with the reason."""
    reason = half_unavailable()
    half = None if reason else half_network(network)
    rows = {}
    for variant in tqdm(VARIANTS, desc="variants", unit="variant", leave=False):
        if variant.half and half is None:
            rows[variant.name] = {"skipped": reason}
            continue
        model = ReferencePipeline(half if variant.half else network, size,
                                  gpu_preprocess_on_cpu(size) if variant.gpu_preprocess else None)
        began = time.perf_counter()
        rows[variant.name] = {**score(ground_truth, in_process(model, images)), "seconds": time.perf_counter() - began}
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
    parser.add_argument("--report", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--verbose", action="store_true", help="log every step, third-party libraries' notices too")
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error(f"--num-images must be at least 1, not {args.num_images}")
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} not found")
    quiet.setup(args.verbose)
    ground_truth = dataset.coco_split(args.seed, args.num_images)
    images = [dataset.generate(args.seed, i).jpeg for i in range(args.num_images)]
    network, _ = load_network(args.checkpoint)
    text = table(split(network, images, ground_truth, args.input_size))
    heading = (f"mAP of `{args.checkpoint.name}` on {args.num_images} generated images (seed {args.seed}), input "
               f"{args.input_size}, in process on the CPU ({torch.get_num_threads()} threads, PyTorch "
               f"{torch.__version__}); COCO metrics by pycocotools. Not run here: nvJPEG's decode, the warp in "
               "FP16 on a GPU, the compiled network's kernels.")
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(f"{heading}\n\n{text}\n")
        print(f"Report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
