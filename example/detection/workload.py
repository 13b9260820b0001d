"""What bench.sh and tune.sh send, and the one stage they cannot run in process on their own.

Requests are ``raw_image`` tensors of generated test-split images, or of the user's image files.
A repository converted with ``--preprocess-format python`` has a Python-backend preprocess, which
has no in-process runtime in ``trtis.runtimes``: its in-process baseline runs the same OpenCV
letterbox the Python model runs.
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from detection import letterbox, pipeline
from trtis import repository
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


class OpenCVPreprocess:
    """The Python preprocess model's math, on a pool of threads (OpenCV releases the GIL)."""

    def __init__(self, size: int):
        self.size, self._pool = size, None

    def __getstate__(self) -> dict:  # the pool stays behind when the naive server's process takes a copy
        return {"size": self.size, "_pool": None}

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(os.cpu_count() or 1)
        images = [bytes(data) for data in feed[pipeline.RAW_IMAGE].reshape(-1)]
        columns = letterbox.preprocess_batch(images, self.size, self._pool.map)
        return dict(zip((pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE), columns))


def overrides(root: Path) -> dict:
    """The in-process stand-in for the preprocess where the repository serves the Python model."""
    configs = repository.read_configs(root)
    pre = configs.get(pipeline.PREPROCESS)
    if pre is None or pre.backend != "python":
        return {}
    return {pipeline.PREPROCESS: OpenCVPreprocess(int(pre.parameters["input_size"].string_value))}
