"""The preprocess stage in TensorFlow, frozen into the GraphDef Triton serves.

Same math as ``letterbox.preprocess``: decode (JPEG/PNG, 3 channels), warp with the official
affine transform (``ImageProjectiveTransformV3``, bilinear, constant 0 fill), RGB -> BGR,
normalise, HWC -> CHW; plus the meta the postprocess needs.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from detection import pipeline
from trtis.export import tensorflow as trtis_tf


def _one_image(encoded: tf.Tensor, size: int):
    tf.debugging.assert_greater(tf.strings.length(encoded), 0, message="raw_image is empty (0 bytes)")
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


def preprocess_graph(size: int = pipeline.INPUT_SIZE) -> tf.compat.v1.GraphDef:
    """The frozen graph: ``raw_image`` [batch, 1] string -> ``image``, ``meta_affine``, ``meta_size``."""
    def preprocess(raw_image):
        signature = (tf.TensorSpec([3, size, size], tf.float32), tf.TensorSpec([2, 3], tf.float32),
                     tf.TensorSpec([2], tf.float32))
        return tf.map_fn(lambda encoded: _one_image(encoded[0], size), raw_image, fn_output_signature=signature)

    spec = tf.TensorSpec([None, 1], tf.string, name=pipeline.RAW_IMAGE)
    return trtis_tf.freeze(preprocess, [spec], [pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE])


class TensorFlowPreprocess:
    """The frozen graph run in process, batch by batch, as the server runs it."""

    def __init__(self, size: int = pipeline.INPUT_SIZE):
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(preprocess_graph(size), name="")
        self.session = tf.compat.v1.Session(graph=graph)

    def __call__(self, images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feed = {f"{pipeline.RAW_IMAGE}:0": np.array([[data] for data in images], dtype=object)}
        return tuple(self.session.run([f"{name}:0" for name in (pipeline.IMAGE, pipeline.META_AFFINE,
                                                                pipeline.META_SIZE)], feed))
