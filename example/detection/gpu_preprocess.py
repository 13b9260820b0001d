"""The preprocess on the GPU: nvJPEG decoding (torchvision), then the letterbox warp and the
normalisation in torch, so the image never crosses host memory as float32.

The same math as ``letterbox.py`` (the OpenCV reference): the official affine transform, bilinear,
zero padding, then (x/255 - mean) / std in BGR order. Each image's header is read first and an image
over the pixel limit is refused before decoding. JPEGs are decoded by nvJPEG in one batch; an image
nvJPEG cannot decode (PNG, CMYK, anything else OpenCV reads) is decoded on the CPU, alone. On a
machine without a GPU the same code runs on the CPU with OpenCV's decoder (torchvision is only
needed for nvJPEG), which is how the tests without a GPU run it.
Self-contained beside ``letterbox.py``, so both can be copied next to the Triton model.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

try:
    from detection.letterbox import MAX_PIXELS, MEAN_BGR, STD_BGR, decode_bgr, declared_size, inverse_affine
except ModuleNotFoundError:  # copied beside the Triton model, with letterbox.py
    from letterbox import MAX_PIXELS, MEAN_BGR, STD_BGR, decode_bgr, declared_size, inverse_affine

JPEG_MAGIC = b"\xff\xd8\xff"


def _checked_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    if len(data) == 0:
        raise ValueError("the image is empty (0 bytes)")
    height, width = declared_size(data)
    if height * width > max_pixels:
        raise ValueError(f"the image is {width}x{height} pixels, over the limit of {max_pixels} pixels")
    return height, width


def _on_cpu(data: bytes, device: torch.device, max_pixels: int) -> torch.Tensor:
    """OpenCV's decode (the reference's), as a 3xHxW BGR uint8 tensor on ``device``."""
    return torch.from_numpy(decode_bgr(data, max_pixels)).to(device).permute(2, 0, 1)


def decode(images: Sequence[bytes], device: torch.device, max_pixels: int = MAX_PIXELS) -> list:
    """Each image as a 3xHxW BGR uint8 tensor on ``device``, or the ValueError that says why not."""
    decoded: list = [None] * len(images)
    jpegs = []
    for index, data in enumerate(images):
        try:
            _checked_size(data, max_pixels)
        except ValueError as error:
            decoded[index] = error
            continue
        if data.startswith(JPEG_MAGIC) and device.type == "cuda":
            jpegs.append(index)
    if jpegs:
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in jpegs]
        try:
            batch = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one image nvJPEG refuses fails the batch: decode them one by one
            batch = []
            for tensor in encoded:
                try:
                    batch.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    batch.append(None)
        for index, rgb in zip(jpegs, batch):
            decoded[index] = None if rgb is None else rgb.flip(0)
    for index, data in enumerate(images):
        if decoded[index] is None:
            try:
                decoded[index] = _on_cpu(data, device, max_pixels)
            except ValueError as error:
                decoded[index] = error
    return decoded


def warp(image: torch.Tensor, size: int, meta_affine: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One 3xHxW uint8 image -> the 3xSxS normalised network input (bilinear, zero padding).

    ``meta_affine`` maps network-input pixels to original pixels (pixel centres at integers, as
    OpenCV's warpAffine); grid_sample wants [-1, 1] across the image's edges."""
    height, width = image.shape[1:]
    device = image.device
    ys, xs = torch.meshgrid(torch.arange(size, device=device, dtype=torch.float32),
                            torch.arange(size, device=device, dtype=torch.float32), indexing="ij")
    a = torch.as_tensor(meta_affine, device=device, dtype=torch.float32)
    source_x = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    source_y = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    grid = torch.stack([(2 * source_x + 1) / width - 1, (2 * source_y + 1) / height - 1], dim=-1)
    warped = F.grid_sample(image[None].float(), grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)
    return ((warped[0] / 255.0) - mean) / std


def preprocess(images: Sequence[bytes], size: int, device: torch.device | str = "cuda",
               max_pixels: int = MAX_PIXELS) -> tuple[list, torch.Tensor | None, np.ndarray, np.ndarray]:
    """Encoded images -> (the errors per image, None where fine; image [N', 3, S, S] on ``device``
    for the N' good ones; meta_affine [N', 2, 3]; meta_size [N', 2])."""
    device = torch.device(device)
    mean = torch.as_tensor(MEAN_BGR, device=device).view(3, 1, 1)
    std = torch.as_tensor(STD_BGR, device=device).view(3, 1, 1)
    errors, inputs, affines, sizes = [], [], [], []
    with torch.inference_mode():
        for image in decode(images, device, max_pixels):
            if isinstance(image, Exception):
                errors.append(image)
                continue
            errors.append(None)
            height, width = image.shape[1:]
            affine = inverse_affine(height, width, size)
            inputs.append(warp(image, size, affine, mean, std))
            affines.append(affine)
            sizes.append(np.array([height, width], np.float32))
        batch = torch.stack(inputs) if inputs else None
    return (errors, batch, np.stack(affines) if affines else np.zeros((0, 2, 3), np.float32),
            np.stack(sizes) if sizes else np.zeros((0, 2), np.float32))
