"""The preprocess stage in TensorFlow, frozen into the GraphDef Triton serves.

Same math as ``letterbox.preprocess``: decode (JPEG/PNG, 3 channels), warp with the official
affine transform (``ImageProjectiveTransformV3``, bilinear, constant 0 fill), RGB -> BGR,
normalise, HWC -> CHW; plus the meta the postprocess needs.

Before decoding, the graph reads the size the image's header declares (JPEG, PNG, BMP, WebP) and
refuses an image over ``max_pixels``: a 500 KB PNG can declare 23000x23000 pixels, 1.6 GB decoded.
It refuses a GIF and an animated WebP from their first bytes, as ``letterbox.animated`` does: the
header does not bound what ``decode_image`` decodes from them (a GIF's frames at their own sizes,
every frame). The images of a batch are decoded one at a time, so a request holds at most one
decoded image.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detection import letterbox, pipeline
from trtis import quiet
from trtis.export import tensorflow as trtis_tf

tf = quiet.import_tensorflow()


def _little_endian(header: tf.Tensor, offset: int, length: int) -> tf.Tensor:
    return tf.add_n([header[offset + i] * 256 ** i for i in range(length)])


def _big_endian(header: tf.Tensor, offset: int, length: int) -> tf.Tensor:
    return tf.add_n([header[offset + i] * 256 ** (length - 1 - i) for i in range(length)])


class _Header:
    """The first 32 bytes of an encoded image (zeros past its end), as a string and as integers."""

    def __init__(self, encoded: tf.Tensor):
        self.first = tf.strings.substr(tf.strings.join([tf.strings.substr(encoded, 0, 32), "\0" * 32]), 0, 32)
        self.bytes = tf.cast(tf.io.decode_raw(self.first, tf.uint8), tf.int64)

    def starts(self, magic: bytes, at: int = 0) -> tf.Tensor:
        return tf.equal(tf.strings.substr(self.first, at, len(magic)), magic)


def _animated(header: _Header) -> tf.Tensor:
    """``letterbox.animated``: a GIF, or a WebP whose header sets the animation flag."""
    flags = tf.bitwise.bitwise_and(header.bytes[20], 0x02)
    return header.starts(b"GIF8") | (header.starts(b"RIFF") & header.starts(b"WEBPVP8X", 8) & (flags != 0))


def _declared_size(encoded: tf.Tensor, header: _Header) -> tf.Tensor:
    """[height, width] as the image's header declares them, read without decoding; [-1, -1] for any
    other format (``decode_image`` knows GIF and JPEG XL too, which the preprocess does not read)."""
    starts, values = header.starts, header.bytes

    def signed(value: tf.Tensor) -> tf.Tensor:  # a BMP's int32 (its height is negative when top-down)
        return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))

    vp8l = _little_endian(values, 21, 4)
    webp = starts(b"RIFF") & starts(b"WEBP", 8)
    candidates = [  # (is this format, height, width)
        (starts(b"\x89PNG\r\n\x1a\n"), _big_endian(values, 20, 4), _big_endian(values, 16, 4)),
        (starts(b"BM"), signed(_little_endian(values, 22, 4)), signed(_little_endian(values, 18, 4))),
        (webp & starts(b"VP8 ", 12), _little_endian(values, 28, 2) % 2 ** 14, _little_endian(values, 26, 2) % 2 ** 14),
        (webp & starts(b"VP8L", 12), vp8l // 2 ** 14 % 2 ** 14 + 1, vp8l % 2 ** 14 + 1),
        (webp & starts(b"VP8X", 12), _little_endian(values, 27, 3) + 1, _little_endian(values, 24, 3) + 1),
    ]
    size = tf.constant([-1, -1], tf.int64)
    for known, height, width in candidates:
        size = tf.where(known, tf.stack([height, width]), size)
    return tf.cond(tf.io.is_jpeg(encoded), lambda: tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64),
                   lambda: size)


def _within_limit(encoded: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """``encoded``, once its format and declared size are checked against ``max_pixels`` (the decode
    waits for it)."""
    header = _Header(encoded)
    still = tf.debugging.Assert(tf.logical_not(_animated(header)), [letterbox.ANIMATED])
    with tf.control_dependencies([still]):  # a GIF is told why, before "unknown format"
        size = _declared_size(encoded, header)
    known = tf.debugging.Assert(size[0] >= 0, [f"Unknown image file format: {letterbox.READS}"])
    message = tf.strings.format("the image is {}x{} pixels, over the limit of {} pixels", (size[1], size[0], max_pixels))
    small = tf.debugging.Assert(size[0] * size[1] <= max_pixels, [message])
    with tf.control_dependencies([known, small]):
        return tf.identity(encoded)


def _one_image(encoded: tf.Tensor, size: int, max_pixels: int):
    not_empty = tf.debugging.assert_greater(tf.strings.length(encoded), 0, message="raw_image is empty (0 bytes)")
    with tf.control_dependencies([not_empty]):
        encoded = _within_limit(tf.identity(encoded), max_pixels)
    # INTEGER_ACCURATE decodes JPEGs exactly as OpenCV (libjpeg's islow IDCT) does.
    image = tf.cond(tf.io.is_jpeg(encoded),
                    lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
                    lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    shape = tf.cast(tf.shape(image), tf.float32)
    height, width = shape[0], shape[1]
    scale = tf.maximum(height, width) / size  # input pixels -> original pixels
    tx, ty = width / 2 - scale * size / 2, height / 2 - scale * size / 2
    transform = tf.stack([scale, 0.0, tx, 0.0, scale, ty, 0.0, 0.0])
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[tf.newaxis], transforms=transform[tf.newaxis],
        output_shape=tf.constant([size, size]), fill_value=tf.constant(0.0), interpolation="BILINEAR",
        fill_mode="CONSTANT")[0]
    bgr = tf.reverse(warped, axis=[-1])
    normalised = (bgr / 255.0 - tf.constant(pipeline.MEAN_BGR)) / tf.constant(pipeline.STD_BGR)
    meta_affine = tf.reshape(tf.stack([scale, 0.0, tx, 0.0, scale, ty]), [2, 3])
    return tf.transpose(normalised, [2, 0, 1]), meta_affine, tf.stack([height, width])


def preprocess_graph(size: int = pipeline.INPUT_SIZE, max_pixels: int = pipeline.MAX_PIXELS) -> tf.compat.v1.GraphDef:
    """The frozen graph: ``raw_image`` [batch, 1] string -> ``image``, ``meta_affine``, ``meta_size``;
    an image whose header declares more than ``max_pixels`` pixels fails its request undecoded."""
    def preprocess(raw_image):
        signature = (tf.TensorSpec([3, size, size], tf.float32), tf.TensorSpec([2, 3], tf.float32),
                     tf.TensorSpec([2], tf.float32))
        return tf.map_fn(lambda encoded: _one_image(encoded[0], size, max_pixels), raw_image,
                         fn_output_signature=signature, parallel_iterations=1)

    spec = tf.TensorSpec([None, 1], tf.string, name=pipeline.RAW_IMAGE)
    return trtis_tf.freeze(preprocess, [spec], [pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE])


class TensorFlowPreprocess:
    """The frozen graph run in process, batch by batch, as the server runs it."""

    def __init__(self, size: int = pipeline.INPUT_SIZE, max_pixels: int = pipeline.MAX_PIXELS):
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(preprocess_graph(size, max_pixels), name="")
        self.session = tf.compat.v1.Session(graph=graph)

    def __call__(self, images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feed = {f"{pipeline.RAW_IMAGE}:0": np.array([[data] for data in images], dtype=object)}
        return tuple(self.session.run([f"{name}:0" for name in (pipeline.IMAGE, pipeline.META_AFFINE,
                                                                pipeline.META_SIZE)], feed))
