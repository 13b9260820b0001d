"""CenterNet's test-time preprocessing in NumPy/OpenCV: the reference the TensorFlow graph is
checked against, and the math of the Python preprocess model (for Triton images without the
TensorFlow backend). Self-contained (numpy, cv2 and Pillow only) so it can be copied next to that model.

The image's header is read first (Pillow reads only the header) and an image over the pixel limit
is refused before decoding. The image is decoded as BGR, warped by the official affine transform
(centre of the image to the centre of the input, scale = longest side -> input size, aspect kept,
padding 0, bilinear), then normalised with the training mean/std.
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


def declared_size(data: bytes) -> tuple[int, int]:
    """(height, width) as the image's header declares them, read without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except Image.DecompressionBombError as error:  # Pillow's own limit, 2 x 89 megapixels
        raise ValueError(f"the image is too large to decode: {error}") from None
    except (OSError, SyntaxError, ValueError):  # UnidentifiedImageError is an OSError
        raise ValueError(f"cannot decode the image ({len(data)} bytes): no known image format's header") from None


def checked_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(height, width) from the header; ValueError naming both when over ``max_pixels`` pixels."""
    if len(data) == 0:
        raise ValueError("the image is empty (0 bytes)")
    height, width = declared_size(data)
    if height * width > max_pixels:
        raise ValueError(f"the image is {width}x{height} pixels, over the limit of {max_pixels} pixels")
    return height, width


def decode_bgr(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG bytes to HxWx3 BGR uint8 (grayscale, alpha and CMYK become 3 channels),
    refusing from its header an image of more than ``max_pixels`` pixels."""
    checked_size(data, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode the image ({len(data)} bytes): not a valid JPEG or PNG")
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
