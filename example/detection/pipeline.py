"""The contract between the three stages, defined once: model and tensor names, input size,
normalisation, output stride and the number of detections.

    raw_image --preprocess--> image, meta_affine, meta_size
    image --network--> hm, wh, reg
    hm, wh, reg, meta_affine, meta_size --postprocess--> boxes, scores, classes
"""
from __future__ import annotations

from trt_client.detections import BOXES, CLASSES, SCORES  # noqa: F401 - the outputs' names, one definition for client and example

ENSEMBLE = "detection"
PREPROCESS = "detection-preprocess"
NETWORK = "detection-network"
POSTPROCESS = "detection-postprocess"

RAW_IMAGE = "raw_image"          # TYPE_STRING [1]: an encoded JPEG or PNG
IMAGE = "image"                  # FP32 [3, S, S]: BGR, normalised, letterboxed
META_AFFINE = "meta_affine"      # FP32 [2, 3]: network-input pixels -> original-image pixels
META_SIZE = "meta_size"          # FP32 [2]: original (height, width)
HEADS = ("hm", "wh", "reg")      # the network's outputs, in this order

INPUT_SIZE = 512
OUTPUT_STRIDE = 4
TOP_K = 100
# The official CenterNet COCO normalisation, in BGR channel order (images are read as BGR).
MEAN_BGR = (0.40789654, 0.44719302, 0.47026115)
STD_BGR = (0.28863828, 0.27408164, 0.27809835)
# Images larger than this are refused from their header, before decoding (an "image bomb": a
# 500 KB PNG can decode to gigabytes). 40 megapixels covers every common camera.
MAX_PIXELS = 40_000_000
