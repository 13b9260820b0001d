"""Image bombs: a small file whose header declares a huge image is refused from that header, before
decoding, by every preprocess form (the TensorFlow graph in the ensemble, the OpenCV model, the GPU
model), alone or eight in one request, as a client error naming the size and the limit; a GIF or an
animated WebP (whose frames the header does not bound) is refused from its first bytes, saying what
to send instead; the preprocess processes' memory stays where it was, and the next image is served
as before."""
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

from detection import gpu_preprocess, letterbox, pipeline
from detection.preprocess import TensorFlowPreprocess
from trtis.serving import process, state_folder

from served_repository import OPENCV_PREPROCESS
from test_gpu_preprocess import DEVICE, infer, server  # noqa: F401 - the served GPU preprocess model

ROOT = Path(__file__).resolve().parents[2]
SIDE = 9000  # 81 megapixels: twice the limit, 243 MB once decoded
REFUSED = f"the image is {SIDE}x{SIDE} pixels, over the limit of {pipeline.MAX_PIXELS} pixels"
MAX_GROWTH = 100 * 2 ** 20  # far less than one decoded bomb
FORMS = {"tensorflow": pipeline.ENSEMBLE, "opencv": OPENCV_PREPROCESS}
GRAY = [value for index in range(256) for value in (index, index, index)]


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


def gif(screen: tuple[int, int], frame: tuple[int, int], frames: int = 1) -> bytes:
    """A valid GIF of ``frames`` plain frames, each ``frame`` (width, height) at (0, 0), whose header's
    logical screen says ``screen``: 48,659 bytes for one 8000x8000 frame, 291,884 for six."""
    images = [Image.new("P", frame, 40 * index) for index in range(frames)]
    for image in images:
        image.putpalette(GRAY)
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], optimize=False)
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", *screen)
    return bytes(data)


def animated_webp(frames: int = 3) -> bytes:
    images = [Image.new("RGB", (300, 200), (40 * index, 0, 0)) for index in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "WEBP", save_all=True, append_images=images[1:])
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """The finding's GIFs too: a 100x100 screen over one 8000x8000 frame (64 megapixels, over the
    limit), and over six."""
    return {"png": png_bomb(SIDE, SIDE), "jpeg": jpeg_bomb(SIDE, SIDE),
            "gif": gif((100, 100), (8000, 8000)), "gif-frames": gif((100, 100), (8000, 8000), 6)}


def refusal(bomb: str) -> str:
    return letterbox.ANIMATED if bomb.startswith("gif") else REFUSED


def preprocess_memory(server) -> int:
    """Resident memory of every preprocess instance (both forms), in bytes."""
    prefix = json.loads((server.state_dir / state_folder.STATE_FILE).read_text())["shm_prefix"]
    return sum(process.rss_bytes(pid) for pid, instance in process.stubs(prefix).items()
               if instance.startswith(pipeline.PREPROCESS))


def raw_images(images: list[bytes], module=grpcclient):
    tensor = module.InferInput(pipeline.RAW_IMAGE, [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data] for data in images], dtype=object))
    return [tensor]


def test_the_copied_limit_is_the_pipelines():
    assert letterbox.MAX_PIXELS == pipeline.MAX_PIXELS


def sample_images() -> dict[str, bytes]:
    """One 300x500 image in each format every form reads, each WebP flavour (lossy, lossless, extended),
    and two with more images whose decoders read only the first, the one the header declares: an
    animated PNG (frames after the default image) and an MPO (a JPEG with a larger JPEG after it)."""
    rgb = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    images = {"jpeg": cv2.imencode(".jpg", rgb)[1].tobytes(), "png": cv2.imencode(".png", rgb)[1].tobytes(),
              "bmp": cv2.imencode(".bmp", rgb)[1].tobytes()}
    later = Image.fromarray(np.zeros((3000, 4000, 3), np.uint8))
    for name, (fmt, options) in {"webp-lossy": ("WEBP", {}), "webp-lossless": ("WEBP", {"lossless": True}),
                                 "webp-extended": ("WEBP", {"exif": b"Exif\0\0"}),
                                 "apng": ("PNG", {"save_all": True, "append_images": [Image.fromarray(rgb[::-1])] * 5}),
                                 "mpo": ("MPO", {"save_all": True, "append_images": [later]})}.items():
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, fmt, **options)
        images[name] = buffer.getvalue()
    return images


def test_each_form_reads_the_size_from_the_header_of_each_format():
    import tensorflow as tf

    images, pixels = sample_images(), 300 * 500
    at_limit, below = TensorFlowPreprocess(64, max_pixels=pixels), TensorFlowPreprocess(64, max_pixels=pixels - 1)

    for name, data in images.items():
        assert at_limit([data])[2].tolist() == [[300, 500]], name
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"500x300 pixels, over the limit of {pixels - 1}"):
            below([data])
        assert letterbox.decode_bgr(data, max_pixels=pixels).shape == (300, 500, 3), name
        with pytest.raises(ValueError, match=f"500x300 pixels, over the limit of {pixels - 1}"):
            letterbox.decode_bgr(data, max_pixels=pixels - 1)


def test_tensorflow_decodes_a_gif_frame_at_its_own_size_whatever_the_screen_says():
    """Why a GIF is refused rather than checked from its header: the frame is what gets decoded."""
    import tensorflow as tf

    data = gif((100, 100), (300, 200))
    assert Image.open(io.BytesIO(data)).n_frames == 1 and data[6:10] == struct.pack("<HH", 100, 100)
    assert tf.io.decode_image(data, channels=3, expand_animations=False).shape == (200, 300, 3)


def refusals(images: list[bytes]) -> dict[str, list[str]]:
    """Each form's error message for each image, in process: the TensorFlow graph, the OpenCV
    preprocess, and the GPU preprocess (on the CPU here, with OpenCV's decode where nvJPEG is not)."""
    import tensorflow as tf

    graph, messages = TensorFlowPreprocess(64), {"tensorflow": [], "opencv": [], "gpu": []}
    for data in images:
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            graph([data])
        messages["tensorflow"].append(error.value.message)
        with pytest.raises(ValueError) as error:
            letterbox.preprocess(data, 64)
        messages["opencv"].append(str(error.value))
    messages["gpu"] = [str(error) for error in gpu_preprocess.preprocess(images, 64, DEVICE)[0]]
    return messages


def test_every_form_refuses_a_gif_and_an_animated_webp_from_their_first_bytes(bombs):
    honest = gif((64, 48), (64, 48))  # one frame, the size of the screen: refused all the same
    images = [bombs["gif"], bombs["gif-frames"], honest, animated_webp()]
    for form, messages in refusals(images).items():
        assert all(letterbox.ANIMATED in message for message in messages), (form, messages)


def test_every_form_refuses_a_format_the_preprocess_does_not_read():
    """A (multi-page) TIFF: OpenCV would decode its first page, the TensorFlow graph knows no TIFF."""
    buffer = io.BytesIO()
    page = Image.new("RGB", (300, 200))
    page.save(buffer, "TIFF", save_all=True, append_images=[page] * 2)
    for form, (message,) in refusals([buffer.getvalue()]).items():
        assert letterbox.READS in message, (form, message)


@pytest.mark.parametrize("count", [1, 8])
@pytest.mark.parametrize("bomb", ["png", "jpeg", "gif", "gif-frames"])
@pytest.mark.parametrize("form", FORMS)
def test_a_bomb_is_refused_from_its_header_and_memory_stays(detection_server, bombs, form, bomb, count):
    client = grpcclient.InferenceServerClient(detection_server.grpc_url)
    good = raw_images([(ROOT / "example" / "test-data" / "3_000000.jpg").read_bytes()])
    output = pipeline.BOXES if form == "tensorflow" else pipeline.IMAGE
    answer = client.infer(FORMS[form], good).as_numpy(output)
    before = preprocess_memory(detection_server)
    with pytest.raises(InferenceServerException) as error:
        client.infer(FORMS[form], raw_images([bombs[bomb]] * count), client_timeout=60)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT" and refusal(bomb) in error.value.message()
    assert preprocess_memory(detection_server) - before < MAX_GROWTH
    assert np.array_equal(client.infer(FORMS[form], good).as_numpy(output), answer)


@pytest.mark.parametrize("bomb", ["gif", "gif-frames"])
def test_the_served_gpu_preprocess_refuses_a_gif_and_keeps_serving(server, bombs, bomb):
    with pytest.raises(InferenceServerException) as error:
        infer(server, [bombs[bomb]])
    assert letterbox.ANIMATED in error.value.message() and "INVALID_ARG" in str(error.value.status())
    assert infer(server, [cv2.imencode(".png", np.zeros((200, 120, 3), np.uint8))[1].tobytes()])[2].tolist() == [
        [200, 120]]


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
