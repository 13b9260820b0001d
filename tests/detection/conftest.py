"""The detection repository converted from the shipped trained weights (input 256 to keep CI
fast; one test converts at the default 512), plus the OpenCV preprocess model, served once per
session."""
from __future__ import annotations

import pytest

from detection import pipeline
from detection.convert import DEFAULT_CHECKPOINT, Options, convert, preprocess_stage
from detection.network import load_network
from detection.reference import ReferencePipeline
from served_repository import INPUT_SIZE, OPENCV_PREPROCESS
from trtis import repository
from trtis.serving import serve


@pytest.fixture(scope="session")
def network():
    return load_network(DEFAULT_CHECKPOINT)[0]


@pytest.fixture(scope="session")
def reference(network):
    """The same pipeline in process: the served TensorFlow graph, the PyTorch network and decoder."""
    from detection.preprocess import TensorFlowPreprocess

    return ReferencePipeline(network, INPUT_SIZE, TensorFlowPreprocess(INPUT_SIZE))


@pytest.fixture(scope="session")
def detection_repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection_repository")
    rows = convert(Options(root, DEFAULT_CHECKPOINT, input_size=INPUT_SIZE, max_batch_size=8))
    opencv = preprocess_stage(Options(root, input_size=INPUT_SIZE, max_batch_size=8, preprocess_format="python"), [], [])
    opencv.config.name = OPENCV_PREPROCESS
    repository.write_repository(root, [opencv])
    return root, rows


@pytest.fixture(scope="session")
def detection_server(detection_repository, tmp_path_factory):
    with serve(detection_repository[0], state_dir=tmp_path_factory.mktemp("detection_state")) as server:
        yield server


@pytest.fixture
def runner(detection_server):
    from trt_client import client

    with client.Inference(detection_server.grpc_url, pipeline.ENSEMBLE, "1") as inference:
        yield inference
