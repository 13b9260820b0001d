"""Image bombs: a small file whose header declares a huge image is refused from that header, before
decoding, by both preprocess forms (the TensorFlow graph in the ensemble, the OpenCV model), alone
or eight in one request, as a client error naming the size and the limit; the preprocess processes'
memory stays where it was, and the next image is served."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from detection import letterbox, pipeline
from trtis.serving import launcher, process

from served_repository import OPENCV_PREPROCESS

ROOT = Path(__file__).resolve().parents[2]
SIDE = 9000  # 81 megapixels: twice the limit, 243 MB once decoded
REFUSED = f"the image is {SIDE}x{SIDE} pixels, over the limit of {pipeline.MAX_PIXELS} pixels"
MAX_GROWTH = 100 * 2 ** 20  # far less than one decoded bomb
FORMS = {"tensorflow": pipeline.ENSEMBLE, "opencv": OPENCV_PREPROCESS}


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of zeros: a few hundred KB that decode to width x height x 3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (1 + 3 * width)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) says width x height."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {"png": png_bomb(SIDE, SIDE), "jpeg": jpeg_bomb(SIDE, SIDE)}


def preprocess_memory(server) -> int:
    """Resident memory of every preprocess instance (both forms), in bytes."""
    prefix = json.loads((server.state_dir / launcher.STATE_FILE).read_text())["shm_prefix"]
    return sum(process.rss_bytes(pid) for pid, instance in process.stubs(prefix).items()
               if instance.startswith(pipeline.PREPROCESS))


def raw_images(images: list[bytes], module=grpcclient):
    tensor = module.InferInput(pipeline.RAW_IMAGE, [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data] for data in images], dtype=object))
    return [tensor]


def test_the_copied_limit_is_the_pipelines():
    assert letterbox.MAX_PIXELS == pipeline.MAX_PIXELS


def sample_images() -> dict[str, bytes]:
    """One 300x500 image in each format both forms read, and each WebP flavour (lossy, lossless, extended)."""
    rgb = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    images = {"jpeg": cv2.imencode(".jpg", rgb)[1].tobytes(), "png": cv2.imencode(".png", rgb)[1].tobytes(),
              "bmp": cv2.imencode(".bmp", rgb)[1].tobytes()}
    for name, options in {"webp-lossy": {}, "webp-lossless": {"lossless": True}, "webp-extended": {"exif": b"Exif\0\0"},
                          "gif": {}}.items():
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, "GIF" if name == "gif" else "WEBP", **options)
        images[name] = buffer.getvalue()
    return images


def test_each_form_reads_the_size_from_the_header_of_each_format():
    import tensorflow as tf

    from detection.preprocess import TensorFlowPreprocess

    images, pixels = sample_images(), 300 * 500
    at_limit, below = TensorFlowPreprocess(64, max_pixels=pixels), TensorFlowPreprocess(64, max_pixels=pixels - 1)

    for name, data in images.items():
        assert at_limit([data])[2].tolist() == [[300, 500]], name
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"500x300 pixels, over the limit of {pixels - 1}"):
            below([data])
        if name != "gif":  # OpenCV 4.10 decodes no GIF
            assert letterbox.decode_bgr(data, max_pixels=pixels).shape == (300, 500, 3), name
        with pytest.raises(ValueError, match=f"500x300 pixels, over the limit of {pixels - 1}"):
            letterbox.decode_bgr(data, max_pixels=pixels - 1)


@pytest.mark.parametrize("count", [1, 8])
@pytest.mark.parametrize("bomb", ["png", "jpeg"])
@pytest.mark.parametrize("form", FORMS)
def test_a_bomb_is_refused_from_its_header_and_memory_stays(detection_server, bombs, form, bomb, count):
    client = grpcclient.InferenceServerClient(detection_server.grpc_url)
    before = preprocess_memory(detection_server)
    with pytest.raises(InferenceServerException) as error:
        client.infer(FORMS[form], raw_images([bombs[bomb]] * count), client_timeout=60)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT" and REFUSED in error.value.message()
    assert preprocess_memory(detection_server) - before < MAX_GROWTH
    good = (ROOT / "example" / "test-data" / "3_000000.jpg").read_bytes()
    assert client.infer(FORMS[form], raw_images([good])).as_numpy(
        pipeline.BOXES if form == "tensorflow" else pipeline.IMAGE).shape[0] == 1


def test_over_http_a_bomb_is_a_400(detection_server, bombs):
    client = httpclient.InferenceServerClient(detection_server.http_url)
    with pytest.raises(InferenceServerException) as error:
        client.infer(pipeline.ENSEMBLE, raw_images([bombs["png"]], httpclient))
    assert error.value.status() == "400" and REFUSED in error.value.message()


def test_a_request_is_bounded_in_images_and_a_large_body_is_refused_undecoded(detection_server, bombs):
    client = grpcclient.InferenceServerClient(detection_server.grpc_url)
    with pytest.raises(InferenceServerException, match="batch-size must be <= 8"):
        client.infer(pipeline.ENSEMBLE, raw_images([bombs["jpeg"]] * 9))
    padded = bombs["png"] + b"\0" * (64 * 2 ** 20)  # 64 MB: a bomb's header, then bytes no decoder reads
    with pytest.raises(InferenceServerException) as error:
        client.infer(pipeline.ENSEMBLE, raw_images([padded]), client_timeout=120)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT" and REFUSED in error.value.message()
