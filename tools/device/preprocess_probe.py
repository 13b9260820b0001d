"""Images/s of the GPU preprocess in process (nvJPEG decode, warp, normalisation) per batch size,
on the test images (run on the GPU host; see README.md).

    example/detection/python.sh tools/device/preprocess_probe.py .device/extras/test/images
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from detection import gpu_preprocess


def main(folder: str) -> None:
    images = [path.read_bytes() for path in sorted(Path(folder).glob("*.jpg"))]
    for batch in (1, 8, 32, 64):
        chunks = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)]
        gpu_preprocess.preprocess(chunks[0], 512)
        torch.cuda.synchronize()
        began = time.perf_counter()
        for chunk in chunks:
            gpu_preprocess.preprocess(chunk, 512)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - began
        print(f"preprocess batch {batch:3d}: {len(chunks) * batch / elapsed:7.0f} images/s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
