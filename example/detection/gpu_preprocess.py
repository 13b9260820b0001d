"""The preprocess on the GPU: nvJPEG decoding (torchvision), then the letterbox warp and the
normalisation in torch, so the image never crosses host memory as float32.

The same math as ``letterbox.py`` (the OpenCV reference): the official affine transform, bilinear,
zero padding, then (x/255 - mean) / std in BGR order. Each image's header is read first and what the
other forms refuse is refused before decoding (``letterbox.checked_size``: over the pixel limit, a GIF,
an animated WebP, a format they do not read). JPEGs are decoded by nvJPEG in one batch; an image
nvJPEG cannot decode (PNG, BMP, WebP, a CMYK JPEG) is decoded on the CPU, alone. On a
machine without a GPU the same code runs on the CPU with OpenCV's decoder (torchvision is only
needed for nvJPEG), which is how the tests without a GPU run it.
Self-contained beside ``letterbox.py``, so both can be copied next to the Triton model.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

try:
    from detection.letterbox import (MAX_PIXELS, MEAN_BGR, STD_BGR, checked_size, decode_bgr, inverse_affine,
                                     model_settings)
except ModuleNotFoundError:  # copied beside the Triton model, with letterbox.py
    from letterbox import MAX_PIXELS, MEAN_BGR, STD_BGR, checked_size, decode_bgr, inverse_affine, model_settings

RAW_IMAGE, OUTPUTS = "raw_image", ("image", "meta_affine", "meta_size")  # detection.pipeline's names

JPEG_MAGIC = b"\xff\xd8\xff"


def _on_cpu(data: bytes, device: torch.device, max_pixels: int) -> torch.Tensor:
    """OpenCV's decode (the reference's), as a 3xHxW BGR uint8 tensor on ``device``."""
    return torch.from_numpy(decode_bgr(data, max_pixels)).to(device).permute(2, 0, 1)


def decode(images: Sequence[bytes], device: torch.device, max_pixels: int = MAX_PIXELS, nvjpeg: bool = True) -> list:
    """Each image as a 3xHxW BGR uint8 tensor on ``device``, or the ValueError that says why not.
    ``nvjpeg=False`` decodes every image with OpenCV, as the reference does (``accuracy_split`` scores
    what nvJPEG's decode alone changes)."""
    decoded: list = [None] * len(images)
    jpegs = []
    for index, data in enumerate(images):
        try:
            checked_size(data, max_pixels)
        except ValueError as error:
            decoded[index] = error
            continue
        if nvjpeg and data.startswith(JPEG_MAGIC) and device.type == "cuda":
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


# Images are warped together, zero-padded onto one canvas; a batch whose canvas would exceed this
# many pixels is split (largest images apart), so one large image cannot make every image large.
CANVAS_PIXELS = 1 << 26


def _groups(shapes: list[tuple[int, int]]) -> list[list[int]]:
    """Indices of ``shapes`` in groups whose padded canvas (count x max height x max width) fits."""
    groups: list[list[int]] = []
    height = width = 0
    for index in sorted(range(len(shapes)), key=lambda i: shapes[i][0] * shapes[i][1]):
        h, w = max(height, shapes[index][0]), max(width, shapes[index][1])
        if groups and (len(groups[-1]) + 1) * h * w <= CANVAS_PIXELS:
            groups[-1].append(index)
            height, width = h, w
        else:
            groups.append([index])
            height, width = shapes[index]
    return groups


def warp(images: Sequence[torch.Tensor], size: int, meta_affine: np.ndarray, mean: torch.Tensor,
         std: torch.Tensor, sample_dtype: torch.dtype | None = None) -> torch.Tensor:
    """3xHxW uint8 images -> the [N, 3, S, S] normalised network input (bilinear, zero padding), in
    one grid_sample per group of images padded onto a common canvas: sampling the canvas's zero
    padding is what sampling outside each image gives anyway.

    ``meta_affine`` maps network-input pixels to original pixels (pixel centres at integers, as
    OpenCV's warpAffine); grid_sample wants [-1, 1] across the canvas's edges. ``sample_dtype``: the
    canvas's and the grid's (default: FP16 on a GPU, FP32 on the CPU)."""
    device = images[0].device
    dtype = sample_dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    ys, xs = torch.meshgrid(torch.arange(size, device=device, dtype=torch.float32),
                            torch.arange(size, device=device, dtype=torch.float32), indexing="ij")
    out = torch.empty((len(images), 3, size, size), device=device, dtype=torch.float32)
    for group in _groups([tuple(image.shape[1:]) for image in images]):
        height = max(images[i].shape[1] for i in group)
        width = max(images[i].shape[2] for i in group)
        canvas = torch.zeros((len(group), 3, height, width), device=device, dtype=dtype)
        for slot, index in enumerate(group):
            canvas[slot, :, :images[index].shape[1], :images[index].shape[2]] = images[index]
        a = torch.as_tensor(meta_affine[group], device=device, dtype=torch.float32)[..., None, None]
        source_x = a[:, 0, 0] * xs + a[:, 0, 1] * ys + a[:, 0, 2]
        source_y = a[:, 1, 0] * xs + a[:, 1, 1] * ys + a[:, 1, 2]
        grid = torch.stack([(2 * source_x + 1) / width - 1, (2 * source_y + 1) / height - 1], dim=-1)
        warped = F.grid_sample(canvas, grid.to(dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
        out[torch.as_tensor(group, device=device)] = (warped.float() / 255.0 - mean) / std
    return out


def preprocess(images: Sequence[bytes], size: int, device: torch.device | str = "cuda",
               max_pixels: int = MAX_PIXELS, nvjpeg: bool = True,
               sample_dtype: torch.dtype | None = None) -> tuple[list, torch.Tensor | None, np.ndarray, np.ndarray]:
    """Encoded images -> (the errors per image, None where fine; image [N', 3, S, S] on ``device``
    for the N' good ones; meta_affine [N', 2, 3]; meta_size [N', 2]). ``nvjpeg`` and ``sample_dtype``
    as ``decode``'s and ``warp``'s."""
    device = torch.device(device)
    mean = torch.as_tensor(MEAN_BGR, device=device).view(3, 1, 1)
    std = torch.as_tensor(STD_BGR, device=device).view(3, 1, 1)
    with torch.inference_mode():
        decoded = decode(images, device, max_pixels, nvjpeg)
        errors = [image if isinstance(image, Exception) else None for image in decoded]
        good = [image for image in decoded if not isinstance(image, Exception)]
        sizes = np.array([image.shape[1:] for image in good], np.float32).reshape(-1, 2)
        affines = np.array([inverse_affine(int(h), int(w), size) for h, w in sizes], np.float32).reshape(-1, 2, 3)
        batch = warp(good, size, affines, mean, std, sample_dtype) if good else None
    return errors, batch, affines, sizes


def prepare(feeds: Sequence[Mapping[str, np.ndarray]], device: torch.device | str,
            parameters: Mapping[str, str], dtype: torch.dtype = torch.float32) -> list:
    """Each request's ``raw_image`` (encoded images) -> its ``image``, ``meta_affine`` and ``meta_size``,
    or the ValueError that fails that request alone; all the requests' images are decoded and warped
    together. The preprocess model runs it, and so does a network model with it as its prepare step
    (``trtis.config.with_prepare_step``: the image then never leaves its instance's GPU)."""
    images, owned = [], []  # owned[r]: the indices in ``images`` of request r's images
    for feed in feeds:
        raw = feed[RAW_IMAGE].reshape(-1)
        owned.append(range(len(images), len(images) + len(raw)))
        images += [bytes(encoded) for encoded in raw]
    size, max_pixels = model_settings(parameters)
    errors, image, meta_affine, meta_size = preprocess(images, size, device, max_pixels)
    if image is not None:
        image = image.to(dtype)  # once for the batch
    first = 0  # the good images are rows of ``image`` in order, so a good request's rows are consecutive
    prepared: list = []
    for mine in owned:
        if not mine:
            prepared.append(ValueError("the request has no image"))
            continue
        failed = [errors[n] for n in mine if errors[n] is not None]
        if failed:
            prepared.append(failed[0])
            first += len(mine) - len(failed)
            continue
        rows = slice(first, first + len(mine))
        first += len(mine)
        prepared.append(dict(zip(OUTPUTS, (image[rows], meta_affine[rows], meta_size[rows]))))
    return prepared


def warm_up(device: torch.device | str, parameters: Mapping[str, str]) -> None:
    """A JPEG batch, a PNG and a corrupt image through ``prepare`` once, when a model loads: the first
    calls (nvJPEG's set-up, the warp's kernels) took 0.8 s per instance on an H100."""
    import cv2

    gradient = np.add.outer(np.arange(48), np.arange(64)).astype(np.uint8)
    image = np.dstack([gradient, gradient[::-1], gradient.T[:48, :48].repeat(2, axis=1)[:, :64]])
    jpeg, png = (cv2.imencode(suffix, image)[1].tobytes() for suffix in (".jpg", ".png"))
    raw = np.array([[jpeg], [jpeg], [png], [b"warm-up"]], dtype=object)
    prepare([{RAW_IMAGE: raw[:2]}, {RAW_IMAGE: raw[2:3]}, {RAW_IMAGE: raw[3:]}], device, parameters)
