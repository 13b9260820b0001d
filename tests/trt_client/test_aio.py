"""trt_client.aio against the real embedded server: the same semantics as the threaded client."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from trtis.serving.launcher import free_port
from trt_client import aio, client
from trt_client.errors import InferenceFailed, InvalidInput, ModelNotReady, RequestTimeout, ServerUnreachable, TooManyInFlight

MODEL = "tiny-chain"


def one(value) -> dict:
    return {"text": np.array([str(value).encode()], dtype=bytes)}


def test_async_client_matches_the_threaded_one(tiny_server):
    with client.Inference(tiny_server.grpc_url, MODEL) as threaded:
        expected = {i: threaded.run(input=one(i))["scores"] for i in range(10)}

    async def main():
        async with aio.Inference(tiny_server.grpc_url, MODEL, "1") as runner:
            assert await runner.server_live() and await runner.model_ready()
            assert [t.name for t in runner.inputs] == ["text"]
            direct = await runner.run(input=one(3))
            for i in range(10):
                await runner.async_run(input=one(i), input_id=i)
            answers = dict([await runner.get() for _ in range(10)])
            return direct, answers

    direct, answers = asyncio.run(main())
    np.testing.assert_array_equal(direct["scores"], expected[3])
    assert sorted(answers) == list(range(10))
    for i, scores in expected.items():
        np.testing.assert_array_equal(answers[i]["scores"], scores)


def test_many_requests_with_a_bound_and_one_failure(tiny_server, tiny):
    async def main():
        async with aio.Inference(tiny_server.grpc_url, MODEL, max_in_flight=3) as runner:
            for i in range(300):
                await runner.async_run(input=one("abc" if i == 150 else i), input_id=i)
                assert runner.in_flight <= 3
            seen, errors = [], []
            for _ in range(300):
                try:
                    seen.append((await runner.get(timeout=60))[0])
                except InferenceFailed as error:
                    errors.append(error.input_id)
            assert runner.peak_in_flight <= 3
            return seen, errors

    seen, errors = asyncio.run(main())
    assert errors == [150]
    assert sorted(seen + errors) == list(range(300))


def test_async_errors_and_non_blocking_get(tiny_server):
    async def main():
        async with aio.Inference(tiny_server.grpc_url, MODEL, max_in_flight=1, when_full="raise") as runner:
            assert await runner.get(block=False) is None
            with pytest.raises(InvalidInput, match="has no input 'image'"):
                await runner.run(input={"image": np.zeros(1, np.float32)})
            await runner.async_run(input=one(1), input_id="a")
            with pytest.raises(TooManyInFlight):
                await runner.async_run(input=one(2), input_id="b")
            with pytest.raises(RequestTimeout):
                await runner.get(timeout=0.001)
            assert (await runner.get(timeout=30))[0] == "a"
        with pytest.raises(ModelNotReady):
            await aio.Inference(tiny_server.grpc_url, "no-such-model").connect()
        with pytest.raises(ServerUnreachable):
            await aio.Inference(f"127.0.0.1:{free_port()}", MODEL, connect_attempts=2, retry_interval=0.1).connect()

    asyncio.run(main())
