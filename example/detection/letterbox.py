"""CenterNet's test-time preprocessing in NumPy/OpenCV: the reference the TensorFlow graph is
checked against, and the math of the Python preprocess model (for Triton images without the
TensorFlow backend). Self-contained (numpy, cv2 and Pillow only) so it can be copied next to that model.

The image's header is read first (Pillow reads only the header) and an image over the pixel limit
is refused before decoding, as is any format but JPEG, PNG, BMP and still WebP: a GIF's frames decode
at sizes its header need not declare, an animated WebP's every frame is decoded. The image is
decoded as BGR, warped by the official affine transform (centre of the image to the centre of the
input, scale = longest side -> input size, aspect kept, padding 0, bilinear), then normalised with
the training mean/std.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping

import cv2
import numpy as np
from PIL import Image

MEAN_BGR = np.array([0.40789654, 0.44719302, 0.47026115], np.float32)
STD_BGR = np.array([0.28863828, 0.27408164, 0.27809835], np.float32)
# detection.pipeline.MAX_PIXELS, which this file cannot import where it is copied (a test checks they agree).
MAX_PIXELS = 40_000_000
# Every preprocess form (this, the GPU one, the TensorFlow graph) refuses the same images with these words.
READS = "the preprocess reads JPEG, PNG, BMP and WebP"
ANIMATED = ("GIF and animated WebP images are refused, as their frames can decode to more pixels than the header "
            "declares: send the first frame as PNG or JPEG")
# Pillow's names for what the preprocess reads; an MPO is a JPEG with more images after it, of which
# the decoders read only the first, the one whose header Pillow reads.
FORMATS = ("JPEG", "MPO", "PNG", "BMP", "WEBP")


def model_settings(parameters: Mapping[str, str]) -> tuple[int, int]:
    """A preprocess's input size and pixel limit, from its Triton config's parameters (as strings)."""
    return int(parameters["input_size"]), int(parameters.get("max_pixels", MAX_PIXELS))


def letterbox_affine(height: int, width: int, size: int) -> np.ndarray:
    """The 2x3 transform from original-image pixels to network-input pixels (official
    ``get_affine_transform(c=(w/2, h/2), s=max(h, w), rot=0, output=(size, size))``)."""
    k = size / max(height, width)
    return np.array([[k, 0, size / 2 - k * width / 2], [0, k, size / 2 - k * height / 2]], np.float64)


def inverse_affine(height: int, width: int, size: int) -> np.ndarray:
    """Network-input pixels -> original-image pixels: the meta the postprocess maps boxes with."""
    return cv2.invertAffineTransform(letterbox_affine(height, width, size)).astype(np.float32)


def animated(data: bytes) -> bool:
    """Whether the image is a GIF or a WebP whose header sets the animation flag: the bytes the
    TensorFlow graph reads too, so that every form refuses the same images. TensorFlow decodes a
    GIF's frames at their own descriptors' sizes, every frame, whatever the header's screen says."""
    animated_webp = data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8X" and len(data) > 20 and bool(data[20] & 0x02)
    return data.startswith(b"GIF8") or animated_webp


def declared_size(data: bytes) -> tuple[int, int]:
    """(height, width) as the image's header declares them, read without decoding the pixels; a
    format the preprocess does not read (``FORMATS``) is refused, whatever OpenCV could decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, height, width = image.format, image.height, image.width
    except Image.DecompressionBombError as error:  # Pillow's own limit, 2 x 89 megapixels
        raise ValueError(f"the image is too large to decode: {error}") from None
    except (OSError, SyntaxError, ValueError):  # UnidentifiedImageError is an OSError
        raise ValueError(f"cannot decode the image ({len(data)} bytes): no known image format's header") from None
    if kind not in FORMATS:
        raise ValueError(f"cannot decode the image ({len(data)} bytes): {kind} is not read; {READS}")
    return height, width


def checked_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(height, width) from the header; ValueError naming both when over ``max_pixels`` pixels, or
    saying what to send instead of a GIF or an animated WebP."""
    if len(data) == 0:
        raise ValueError("the image is empty (0 bytes)")
    if animated(data):
        raise ValueError(ANIMATED)
    height, width = declared_size(data)
    if height * width > max_pixels:
        raise ValueError(f"the image is {width}x{height} pixels, over the limit of {max_pixels} pixels")
    return height, width


def decode_bgr(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG/BMP/WebP bytes to HxWx3 BGR uint8 (grayscale, alpha and CMYK become 3
    channels), refusing from its header what ``checked_size`` refuses."""
    checked_size(data, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode the image ({len(data)} bytes): not a valid JPEG, PNG, BMP or WebP")
    return image


def preprocess(data: bytes, size: int, mean: np.ndarray = MEAN_BGR, std: np.ndarray = STD_BGR,
               max_pixels: int = MAX_PIXELS):
    """Encoded image -> (3xSxS float32 input, 2x3 meta_affine, [height, width] meta_size)."""
    image = decode_bgr(data, max_pixels)
    height, width = image.shape[:2]
    warped = cv2.warpAffine(image, letterbox_affine(height, width, size), (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    normalised = (warped.astype(np.float32) / 255.0 - mean) / std
    return (np.ascontiguousarray(normalised.transpose(2, 0, 1)), inverse_affine(height, width, size),
            np.array([height, width], np.float32))


def preprocess_batch(images: Iterable[bytes], size: int, map_: Callable = map, max_pixels: int = MAX_PIXELS):
    """Encoded images -> the three outputs stacked along a batch axis; ``map_`` may be a pool's."""
    parts = list(map_(lambda data: preprocess(data, size, max_pixels=max_pixels), images))
    return tuple(np.stack(column) for column in zip(*parts))
