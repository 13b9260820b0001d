"""Shared fixtures: the tiny models' repository and one real server for it per session."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from trtis.serving import Server, serve


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A repository of tiny real models (TensorFlow, ONNX, TorchScript and their ensemble)."""
    from tiny_models import build

    return build(tmp_path_factory.mktemp("tiny_repository"))


@pytest.fixture(scope="session")
def tiny_server(tiny, tmp_path_factory) -> Iterator[Server]:
    with serve(tiny.root, state_dir=tmp_path_factory.mktemp("tiny_state")) as server:
        yield server
