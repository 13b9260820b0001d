"""A model with a prepare step (``trtis.config.with_prepare_step``), served by the real server: the
step turns each request's raw bytes into the model's input in the model's own process (warmed up once
when the instance loads: its prepare refuses to run otherwise); a request the step refuses fails
alone, the others still run as one batch, and a step that breaks fails only the requests it was handed."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from docs.marked_blocks import blocks_named
from test_export import Classifier, images
from trtis import config, export, repository, runtimes
from trtis.serving import serve

NAME = "classifier-prepared"
# The step of docs/converter.md, as written there: each request's "pixels" (raw little-endian float32
# bytes of one 3x16x16 image) -> "image".
(STEP,) = [block.code for block in blocks_named("converter-prepare")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    exported = export.export(Classifier(), [images(2)], ["image"], ["logits", "probabilities"], "torchscript",
                             name=NAME, max_batch_size=4,
                             dynamic_batching=config.DynamicBatching(max_queue_delay_us=2_000_000))
    prepared = config.with_prepare_step(exported.model.config, "pixels_step.py",
                                        [config.Tensor("pixels", np.object_, [1])])
    repository.write_repository(root, [repository.Model(prepared, exported.model.artefact,
                                                        files={"1/pixels_step.py": STEP.encode()})])
    with serve(root) as running:
        yield running


def test_the_config_takes_the_raw_inputs_and_names_what_the_step_makes():
    exported = export.export(Classifier(), [images(2)], ["image"], ["logits", "probabilities"], "torchscript",
                             name=NAME, max_batch_size=4)
    exported.model.config.model_warmup.add(name="zeros", batch_size=1)
    prepared = config.with_prepare_step(exported.model.config, "step.py", [config.Tensor("pixels", np.object_, [1])])
    assert [(t.name, config.pb.DataType.Name(t.data_type), list(t.dims)) for t in prepared.input] == [
        ("pixels", "TYPE_STRING", [1])]
    assert prepared.parameters[config.PREPARE].string_value == "step.py"
    assert runtimes.file_inputs({"pixels": np.dtype(object)}, {k: v.string_value for k, v in prepared.parameters.items()}) \
        == {"image": np.dtype(np.float32)}
    assert not prepared.model_warmup, "zeros of the raw inputs are not what the step reads"
    assert list(exported.model.config.input[0].dims) == [3, 16, 16], "the original config is left as it was"
    repository.validate([prepared])


def pixels(batch: torch.Tensor) -> np.ndarray:
    return np.array([[image.numpy().astype("<f4").tobytes()] for image in batch], dtype=object)


async def infer_together(url: str, requests: list[np.ndarray]) -> list:
    """The requests at once (the model waits up to 2 s for a full batch of 4: 1 + 1 + 2 images fill it
    at once): each one's probabilities, or its error."""
    async with grpcaio.InferenceServerClient(url) as client:
        async def one(data):
            tensor = grpcaio.InferInput("pixels", list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            try:
                return (await client.infer(NAME, [tensor])).as_numpy("probabilities")
            except InferenceServerException as error:
                return error
        return await asyncio.gather(*(one(data) for data in requests))


def test_requests_run_as_one_batch_and_a_refused_one_fails_alone(server):
    batch = images(3, seed=7)
    with torch.inference_mode():
        expected = Classifier().eval()(batch)[1].numpy()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = client.get_inference_statistics(NAME).model_stats[0]
    short = np.array([[b"\0" * 12]], dtype=object)
    results = asyncio.run(infer_together(server.grpc_url, [pixels(batch[:1]), short, pixels(batch[1:])]))
    np.testing.assert_allclose(results[0], expected[:1], atol=1e-5)
    np.testing.assert_allclose(results[2], expected[1:], atol=1e-5)
    assert isinstance(results[1], InferenceServerException)
    assert "pixels must be 3072 bytes, not [12]" in results[1].message()
    assert "INVALID_ARG" in str(results[1].status())
    after = client.get_inference_statistics(NAME).model_stats[0]
    assert after.execution_count - before.execution_count == 1, "the three requests were one execution"
    assert after.inference_count - before.inference_count == 4, "of 1 + 1 (refused) + 2 images"


def test_a_step_that_breaks_fails_its_requests_and_the_model_keeps_serving(server):
    results = asyncio.run(infer_together(server.grpc_url, [np.array([[b"break the step"]], dtype=object)]))
    assert isinstance(results[0], InferenceServerException)
    assert "RuntimeError: the step broke" in results[0].message() and "INTERNAL" in str(results[0].status())
    assert asyncio.run(infer_together(server.grpc_url, [pixels(images(1))]))[0].shape == (1, 4)


def test_the_in_process_baseline_runs_the_step_as_the_server_does(server):
    from trtis.bench.in_process import InProcessModel

    batch = images(2, seed=9)
    with torch.inference_mode():
        expected = Classifier().eval()(batch)[1].numpy()
    with InProcessModel(server.repository, NAME) as model:
        np.testing.assert_allclose(model({"pixels": pixels(batch)})["probabilities"], expected, atol=1e-5)
        with pytest.raises(ValueError, match="pixels must be 3072 bytes"):
            model({"pixels": np.array([[b"\0"]], dtype=object)})


def test_a_step_is_its_own_module_and_must_answer_every_request(tmp_path):
    """Loaded under a name of its own, registered before it runs (a dataclass needs that), and
    refused by name when it answers a batch with the wrong count."""
    (tmp_path / "counting_step.py").write_text(
        "from __future__ import annotations\nfrom dataclasses import dataclass\n\n\n@dataclass\nclass Seen:\n"
        "    count: int\n\n\ndef prepare(feeds, device, parameters):\n    return [Seen(len(feeds))][:int(parameters['keep'])]\n")
    prepare = runtimes.prepare_step(tmp_path, "counting_step.py", "cpu", {"keep": "1"})
    assert [seen.count for seen in prepare([{}])] == [1]
    with pytest.raises(RuntimeError, match="prepare step counting_step.py: 1 answers for 2 requests"):
        prepare([{}, {}])
    with pytest.raises(ValueError, match="not a Python module"):
        runtimes.prepare_step(tmp_path, "counting_step.txt", "cpu", {})
