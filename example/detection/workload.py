"""What bench.sh and tune.sh send, and the one stage they cannot run in process on their own.

Requests are ``raw_image`` tensors of generated test-split images, or of the user's image files.
A repository converted with ``--preprocess-format python`` or ``gpu`` has a Python-backend
preprocess, which has no in-process runtime in ``trtis.runtimes``: its in-process baseline runs
the math that Python model runs, the OpenCV letterbox (or, for the GPU model where a GPU is
present, the nvJPEG/torch preprocess, its image brought back to host memory for the next step).
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from detection import letterbox, pipeline
from trtis import repository
from trtis.bench.in_process import device_of
from trtis.bench.inputs import Request, files_under

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=32, help="generated test-split images sent round-robin")
    parser.add_argument("--image-dir", type=Path, nargs="*", help="send these images (files or folders) instead")


def requests(image_dir: list[Path] | None, count: int) -> tuple[list[Request], str]:
    """One ``raw_image`` request per image, and how the report names the images."""
    if image_dir:
        images = [path.read_bytes() for path in files_under(image_dir, IMAGE_SUFFIXES)]
        source = f"{len(images)} images of {', '.join(str(p) for p in image_dir)}"
    else:
        from detection import dataset

        images = [dataset.generate(dataset.SPLIT_SEEDS["test"], i).jpeg for i in range(count)]
        source = f"{count} generated test images"
    if not images:
        raise ValueError("no images to send")
    return [{pipeline.RAW_IMAGE: np.array([[image]], dtype=np.object_)} for image in images], source


OUTPUTS = (pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE)


class OpenCVPreprocess:
    """The Python preprocess model's math, on a pool of threads (OpenCV releases the GIL)."""

    def __init__(self, size: int, max_pixels: int = pipeline.MAX_PIXELS):
        self.size, self.max_pixels, self._pool = size, max_pixels, None

    def __getstate__(self) -> dict:  # the pool stays behind when the naive server's process takes a copy
        return {**self.__dict__, "_pool": None}

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(os.cpu_count() or 1)
        images = [bytes(data) for data in feed[pipeline.RAW_IMAGE].reshape(-1)]
        return dict(zip(OUTPUTS, letterbox.preprocess_batch(images, self.size, self._pool.map, self.max_pixels)))


class GpuPreprocess:
    """The GPU preprocess model's math (nvJPEG decode, torch warp) on ``device``."""

    def __init__(self, size: int, max_pixels: int, device: str):
        self.size, self.max_pixels, self.device = size, max_pixels, device

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from detection import gpu_preprocess

        images = [bytes(data) for data in feed[pipeline.RAW_IMAGE].reshape(-1)]
        errors, image, meta_affine, meta_size = gpu_preprocess.preprocess(images, self.size, self.device,
                                                                          self.max_pixels)
        failed = [str(error) for error in errors if error is not None]
        if failed:
            raise ValueError(f"{pipeline.PREPROCESS}: {failed[0]}")
        return dict(zip(OUTPUTS, (image.cpu().numpy(), meta_affine, meta_size)))


def overrides(root: Path) -> dict:
    """The in-process stand-in for the preprocess where the repository serves a Python model."""
    pre = repository.read_configs(root).get(pipeline.PREPROCESS)
    if pre is None or pre.backend != "python":
        return {}
    size = int(pre.parameters["input_size"].string_value)
    max_pixels = int(pre.parameters["max_pixels"].string_value) if "max_pixels" in pre.parameters \
        else pipeline.MAX_PIXELS
    device = device_of(pre)
    stand_in = GpuPreprocess(size, max_pixels, device) if device != "cpu" else OpenCVPreprocess(size, max_pixels)
    return {pipeline.PREPROCESS: stand_in}
