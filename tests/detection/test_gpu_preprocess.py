"""The GPU preprocess (``--preprocess-format gpu``) against the OpenCV reference, and its Triton model.

Without a GPU these run the same code on the CPU: the warp and normalisation in torch, OpenCV's
decoder (nvJPEG is the one part that needs the GPU; its figures are in docs/performance).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from detection import dataset, gpu_preprocess, letterbox, pipeline
from detection.convert import (DEFAULT_CLASSES, PREPROCESS_TOLERANCE, Options, decoded_network_stage,
                               preprocess_stage, repository_models, sample_images, validate, with_defaults)
from detection.matching import REDUCED, centres, compare_detections
from detection.reference import ReferencePipeline
from served_repository import INPUT_SIZE
from test_preprocess import IMAGES, SIZE
from trt_client import client
from trtis import config, repository, verify
from trtis.serving import serve

ROOT = Path(__file__).resolve().parents[2]
NAMES = [pipeline.IMAGE, pipeline.META_AFFINE, pipeline.META_SIZE]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_the_gpu_preprocess_matches_the_opencv_reference(kind):
    data = IMAGES[kind]()
    errors, image, meta_affine, meta_size = gpu_preprocess.preprocess([data], SIZE, DEVICE)
    assert errors == [None]
    reference = letterbox.preprocess(data, SIZE)
    for name, a, b in zip(NAMES, (image[0].cpu().numpy(), meta_affine[0], meta_size[0]), reference):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert np.abs(a - b).max() <= PREPROCESS_TOLERANCE[name], name
    assert np.abs(image[0].cpu().numpy() - reference[0]).mean() < 0.01


def test_a_bad_image_fails_alone_with_its_reason():
    bomb = letterbox_bomb()
    images = [IMAGES["jpeg"](), b"", b"not an image", bomb, IMAGES["png"]()]
    errors, image, meta_affine, meta_size = gpu_preprocess.preprocess(images, SIZE, DEVICE, max_pixels=10_000_000)
    assert errors[0] is None and errors[4] is None
    assert "empty" in str(errors[1]) and "no known image format" in str(errors[2])
    assert "over the limit of 10000000 pixels" in str(errors[3])
    assert image.shape == (2, 3, SIZE, SIZE) and meta_size.tolist() == [[90, 160], [200, 120]]


def letterbox_bomb(side: int = 5000) -> bytes:
    """A PNG whose header declares side x side pixels (a few KB of zlib'd zeros would follow)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The GPU preprocess model as convert.sh writes it; on a KIND_CPU instance where there is no GPU."""
    root = tmp_path_factory.mktemp("gpu_preprocess")
    model = preprocess_stage(Options(root, input_size=SIZE, max_batch_size=8, preprocess_format="gpu", max_pixels=10_000_000),
                             [], [])
    if not torch.cuda.is_available():
        del model.config.instance_group[:]
        model.config.instance_group.add(count=1, kind=config.pb.ModelInstanceGroup.KIND_CPU)
    repository.write_repository(root, [model])
    with serve(root) as running:
        yield grpcclient.InferenceServerClient(running.grpc_url)


def test_convert_refuses_the_gpu_preprocess_without_a_gpu_before_any_work(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    run = subprocess.run([str(ROOT / "example" / "detection" / "convert.sh"), "--preprocess-format", "gpu",
                          "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "--preprocess-format gpu decodes with nvJPEG on a CUDA GPU" in run.stderr
    assert not any(tmp_path.iterdir())


def infer(client, images: list[bytes]):
    tensor = grpcclient.InferInput(pipeline.RAW_IMAGE, [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data] for data in images], dtype=object))
    result = client.infer(pipeline.PREPROCESS, [tensor])
    return [result.as_numpy(name) for name in NAMES]


def test_the_served_model_answers_as_the_reference(server):
    images = [IMAGES["jpeg"](), IMAGES["grayscale png"](), IMAGES["tiny"]()]
    image, meta_affine, meta_size = infer(server, images)
    for index, data in enumerate(images):
        reference = letterbox.preprocess(data, SIZE)
        assert np.abs(image[index] - reference[0]).max() <= PREPROCESS_TOLERANCE[pipeline.IMAGE]
        np.testing.assert_allclose(meta_affine[index], reference[1], atol=1e-4)
        assert meta_size[index].tolist() == reference[2].tolist()


@pytest.mark.parametrize("data, message", [(b"", "empty"), (b"not an image", "no known image format"),
                                           (letterbox_bomb(), "over the limit of 10000000 pixels")])
def test_the_served_model_refuses_a_bad_image_as_a_client_error_and_keeps_serving(server, data, message):
    with pytest.raises(InferenceServerException) as error:
        infer(server, [data])
    assert message in error.value.message() and "INVALID_ARG" in str(error.value.status())
    assert infer(server, [IMAGES["png"]()])[2].tolist() == [[200, 120]]


def test_images_of_different_sizes_warp_together_as_each_alone():
    images = [IMAGES[kind]() for kind in ("jpeg", "png", "tiny", "large", "grayscale png")]
    _, together, _, _ = gpu_preprocess.preprocess(images, SIZE, DEVICE)
    for index, data in enumerate(images):
        _, alone, _, _ = gpu_preprocess.preprocess([data], SIZE, DEVICE)
        torch.testing.assert_close(together[index], alone[0], atol=1e-3, rtol=0)  # grid rounding per canvas size


def test_a_large_image_gets_a_canvas_of_its_own():
    groups = gpu_preprocess._groups([(100, 100), (8000, 8000), (120, 90), (100, 100)])
    assert sorted(map(sorted, groups)) == [[0, 2, 3], [1]]


@pytest.fixture(scope="module")
def in_network(network, tmp_path_factory):
    """``--preprocess-in-network`` as convert.sh assembles it. Without a GPU (where convert.sh refuses
    the GPU preprocess): the decoded network as FP32 TorchScript on the CPU, and the preprocess's CPU
    decode; the compiled GPU form is measured in docs/performance/gpu.md."""
    root = tmp_path_factory.mktemp("in_network")
    options = Options(root, input_size=INPUT_SIZE, max_batch_size=8, preprocess_format="gpu", preprocess_in_network=True,
                      network_format="compiled" if torch.cuda.is_available() else "torchscript",
                      network_instances=1, max_pixels=10_000_000)
    reference = ReferencePipeline(network, INPUT_SIZE)
    images = sample_images(())
    image, meta_affine, meta_size = reference.preprocess(images)
    decoded = decoded_network_stage(options, network, image, (meta_affine, meta_size), DEFAULT_CLASSES)
    preprocess = preprocess_stage(options, [], [])  # its settings and files: the model itself is not written
    repository.write_repository(root, repository_models(options, preprocess, [decoded.model], DEFAULT_CLASSES))
    with serve(root) as running:
        yield running, reference


def test_the_preprocess_in_the_network_serves_the_reference_detections(in_network):
    """One model: the ensemble's single step takes the encoded image; the detections are the
    in-process pipeline's (OpenCV preprocess, PyTorch network and decoder)."""
    running, reference = in_network
    config_text = (running.repository / pipeline.NETWORK / "config.pbtxt").read_text()
    assert 'name: "raw_image"' in config_text and "gpu_preprocess.py" in config_text
    assert sorted(p.name for p in running.repository.iterdir() if p.is_dir()) == [pipeline.ENSEMBLE, pipeline.NETWORK]
    samples = [dataset.generate(dataset.SPLIT_SEEDS["test"], i) for i in range(3)]
    with client.Inference(running.grpc_url, pipeline.ENSEMBLE, "1") as runner:
        for sample in samples:
            served = runner.run(input={pipeline.RAW_IMAGE: np.array([sample.jpeg], dtype=bytes)})
            expected = reference([sample.jpeg])
            assert (expected[pipeline.SCORES] > 0.3).sum() >= 1, "the test image has detections to compare"
            scale = max(sample.image.shape[:2]) / INPUT_SIZE
            verify.require(compare_detections("preprocess in network", centres(expected), centres(served),
                                              min_score=REDUCED["min_score"], score_tolerance=REDUCED["score_tolerance"],
                                              box_tolerance=REDUCED["box_tolerance"] * scale))


def test_the_preprocess_in_the_network_refuses_a_bad_image_alone(in_network):
    running, _ = in_network
    good = IMAGES["jpeg"]()
    with client.Inference(running.grpc_url, pipeline.ENSEMBLE, "1") as runner:
        with pytest.raises(Exception, match="over the limit of 10000000 pixels"):
            runner.run(input={pipeline.RAW_IMAGE: np.array([letterbox_bomb()], dtype=bytes)})
        assert runner.run(input={pipeline.RAW_IMAGE: np.array([good], dtype=bytes)})[pipeline.BOXES].shape == (
            1, pipeline.TOP_K, 4)


def test_convert_refuses_the_preprocess_in_the_network_without_its_formats():
    with pytest.raises(ValueError, match="add --preprocess-format gpu --network-format compiled"):
        validate(Options(Path("unused"), preprocess_in_network=True))


def test_the_preprocess_inside_the_network_gets_the_tuned_defaults_and_given_values_stay():
    """The GPU pair's defaults are tune.sh's winner on an H100 (docs/performance/tune-h100-gpu.md)."""
    gpu = with_defaults(Options(Path("unused"), preprocess_format="gpu", network_format="compiled"))
    assert (gpu.preprocess_in_network, gpu.network_instances, gpu.max_batch_size) == (True, 3, 32)
    given = with_defaults(Options(Path("unused"), preprocess_format="gpu", network_format="compiled",
                                  max_batch_size=64, network_instances=2))
    assert (given.network_instances, given.max_batch_size) == (2, 64)
    cpu = with_defaults(Options(Path("unused"), network_format="onnx"))
    assert (cpu.preprocess_in_network, cpu.network_instances, cpu.max_batch_size) == (False, 1, 8)


def test_tune_sweeps_the_one_model_pipeline(in_network, tmp_path):
    """tune.sh on the repository --preprocess-in-network writes: only the network's instances vary (there
    is no preprocess or postprocess model), judged against the pipeline in process, prepare step included."""
    running, _ = in_network
    run = subprocess.run([str(ROOT / "example" / "detection" / "tune.sh"), "--model-repository", str(running.repository),
                          "--network-instances", "2", "--max-batch-size", "4", "--max-queue-delay-us", "0",
                          "--concurrency", "1", "--clients", "2", "--seconds", "3", "--warmup", "3", "--images", "2",
                          "--output", str(tmp_path), "--name", "one"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "one.json").read_text())
    assert [r["setting"] for r in report["results"]] == [
        {"instances": {pipeline.NETWORK: 2}, "max_batch_size": 4, "max_queue_delay_us": 0, "threads": {}}]
    assert "2 client processes, each with the concurrency shown" in report["title"]
    assert report["reference"]["name"] == "in process" and report["reference"]["throughput"]["1"] > 0
    assert all(level["errors"] == 0 and level["throughput"] > 0 for r in report["results"] for level in r["levels"])
