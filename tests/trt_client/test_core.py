"""The gRPC target the client builds from what the caller gives as ``url``."""
from __future__ import annotations

import pytest

from trt_client.core import grpc_target


@pytest.mark.parametrize("url, target", [
    ("127.0.0.1:7001", "127.0.0.1:7001"),
    ("triton.example:8001", "triton.example:8001"),
    ("dns:///triton-headless:8001", "dns:///triton-headless:8001"),
    ("ipv4:10.0.0.1:8001,10.0.0.2:8001", "ipv4:10.0.0.1:8001,10.0.0.2:8001"),
    (["10.0.0.1:8001", "10.0.0.2:8001"], "ipv4:10.0.0.1:8001,10.0.0.2:8001"),
    ("10.0.0.1:8001, 10.0.0.2:8001", "ipv4:10.0.0.1:8001,10.0.0.2:8001"),
    (["[fd00::1]:8001", "[fd00::2]:8001"], "ipv6:[fd00::1]:8001,[fd00::2]:8001"),
    (["triton.example:8001"], "triton.example:8001"),
])
def test_addresses_become_one_grpc_target(url, target):
    assert grpc_target(url) == target


@pytest.mark.parametrize("url", [
    ["triton-a:8001", "triton-b:8001"], ["10.0.0.1:8001", "[fd00::1]:8001"], ["10.0.0.1", "10.0.0.2"],
    ["fd00::1:8001", "fd00::2:8001"], [], "", ["10.0.0.1:8001", ""]])
def test_addresses_that_cannot_form_one_target_are_refused(url):
    with pytest.raises(ValueError):
        grpc_target(url)
