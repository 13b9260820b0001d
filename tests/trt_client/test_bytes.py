"""BYTES inputs keep every byte: real BMP and WebP files that end in NUL bytes, sent every way a
user may pass them, come back byte for byte from a model that echoes what the server received."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from client_harness import bmp, webp
from trt_client.errors import InvalidInput


@pytest.fixture(params=["bmp", "webp"])
def image(request) -> bytes:
    data = {"bmp": bmp, "webp": webp}[request.param]()
    truncated = np.frombuffer(data.rstrip(b"\0"), np.uint8)
    assert cv2.imdecode(truncated, cv2.IMREAD_COLOR) is None, "the payload must be one that losing its trailing NULs breaks"
    return data


FORMS = {
    "bytes": lambda data: data,
    "list of bytes": lambda data: [data],
    "np.array([data], dtype=bytes)": lambda data: np.array([data], dtype=bytes),  # the tutorial's line
    "np.array([data], dtype=object)": lambda data: np.array([data], dtype=object),
    "np.array([[data]], dtype=bytes)": lambda data: np.array([[data]], dtype=bytes),
}


@pytest.mark.parametrize("form", FORMS)
def test_one_image_arrives_byte_for_byte(clients, echo_server, image, form):
    value = FORMS[form](image)
    runner = clients.open(echo_server.grpc_url, "echo")
    results = runner.run(input={"data": value})
    assert results["length"].tolist() == [[len(image)]]
    assert results["echo"].tolist() == [[image]]
    assert cv2.imdecode(np.frombuffer(results["echo"][0, 0], np.uint8), cv2.IMREAD_COLOR) is not None
    runner.async_run(input={"data": value}, input_id="again")
    assert runner.get(timeout=30)[1]["echo"].tolist() == [[image]]


def test_a_list_of_bytes_is_a_batch(clients, echo_server):
    images = [bmp(), webp(), b"text", b"\0"]
    results = clients.open(echo_server.grpc_url, "echo").run(input={"data": images})
    assert results["echo"][:, 0].tolist() == images
    assert results["length"][:, 0].tolist() == [len(i) for i in images]


def test_several_texts_in_a_numpy_bytes_array_lose_only_numpy_padding(clients, echo_server):
    texts = np.array([[b"1"], [b"22"], [b"333"]], dtype=bytes)
    results = clients.open(echo_server.grpc_url, "echo").run(input={"data": texts})
    assert results["echo"][:, 0].tolist() == [b"1", b"22", b"333"]


def test_binary_items_whose_trailing_nuls_are_lost_are_refused_not_sent(clients, echo_server):
    runner = clients.open(echo_server.grpc_url, "echo")
    batch = np.array([[bmp()], [webp()]], dtype=bytes)
    with pytest.raises(InvalidInput, match=r"cannot be recovered; pass the bytes themselves \(a list of bytes\)"):
        runner.run(input={"data": batch})
    with pytest.raises(InvalidInput, match="cannot be recovered"):
        runner.async_run(input={"data": batch})
    assert runner.get(block=False) is None
