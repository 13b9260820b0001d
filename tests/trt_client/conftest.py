"""Fixtures of the client tests (helpers in client_harness.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client_harness import CLASS_NAMES, KINDS, Clients, detector_model, echo_model
from trtis import repository
from trtis.serving import serve


@pytest.fixture(params=KINDS)
def clients(request) -> Iterator[Clients]:
    """Opens the threaded client, then (second run) the asyncio one, driven the same way."""
    opened = Clients(request.param)
    yield opened
    opened.finish()


@pytest.fixture(scope="session")
def echo_repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("echo_repository")
    queued = echo_model("queue-of-one", delay_ms=200)
    queued.config.dynamic_batching.default_queue_policy.max_queue_size = 1
    repository.write_repository(root, [echo_model(), echo_model("slow-echo", delay_ms=20), queued,
                                       detector_model("detector", CLASS_NAMES),
                                       detector_model("detector-labels", label_file=True)])
    return root


@pytest.fixture(scope="session")
def echo_server(echo_repository):
    with serve(echo_repository) as server:
        yield server
