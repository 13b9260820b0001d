"""docs/client.md's code, run as written: every fenced block is marked ``<!-- test: client -->``
(the tiny server), ``<!-- test: client tls -->`` (a tiny server with TLS and an inference key),
``<!-- test: client detector -->`` (the detector-shaped test model, which names its classes) or
``<!-- illustrative: why -->`` (shown, not run: what a command printed).

The samples speak of the detection example; against the test models only the names below, the
address and the image change.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from client_harness import make_certificates, tritonserver
from docs.marked_blocks import blocks

INFERENCE_KEY = "a-key-for-the-docs-test-0123456789"
TINY = {'"detection"': '"tiny-chain"', "--model detection": "--model tiny-chain", '"raw_image"': '"text"'}
DETECTOR = {'"detection"': '"detector"', "--model detection": "--model detector", '"raw_image"': '"data"'}


def samples() -> list[tuple[str, str, str]]:
    """(server, language, code) of every block marked to be tested, in the page's order."""
    found = blocks("docs/client.md")
    assert all(block.marker for block in found), "a code block of docs/client.md is not marked"
    return [(block.marker[1], block.language, block.code) for block in found if block.marker[0] == "test"]


@pytest.fixture(scope="module")
def tls_server(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs_tls")
    certificates = make_certificates(folder)
    flags = ["--grpc-use-ssl=true", f"--grpc-server-cert={certificates['server.pem']}",
             f"--grpc-server-key={certificates['server.key']}",
             f"--grpc-restricted-protocol=inference,metadata,model-config:inference-key={INFERENCE_KEY}"]
    with tritonserver(tiny.root, flags, folder) as server:
        yield server, certificates["ca.pem"]


def as_tested(code: str, url: str, names: dict[str, str]) -> str:
    for written, tested in {"127.0.0.1:7001": url, "127.0.0.1:7101": url, **names}.items():
        code = code.replace(written, tested)
    assert not re.search(r"\bdetection\b|raw_image", code), code
    return code


def test_every_sample_of_the_client_page_runs(tiny_server, tls_server, echo_server, tmp_path, monkeypatch):
    server, ca = tls_server
    (tmp_path / "image.jpg").write_bytes(b"2.5")  # what the tiny chain takes: a number as text
    (tmp_path / "ca.pem").write_bytes(ca.read_bytes())
    (tmp_path / "inference.key").write_text(INFERENCE_KEY + "\n")
    detector = tmp_path / "detector"  # what the detector takes: "class score x1 y1 x2 y2" lines
    detector.mkdir()
    (detector / "image.jpg").write_bytes(b"0 0.91 10 12 50 60\n2 0.45 5 5 9 9\n1 0.2 0 0 4 4\n")
    kinds = {"client": (tiny_server.grpc_url, TINY, tmp_path), "client tls": (server.grpc_url, TINY, tmp_path),
             "client detector": (echo_server.grpc_url, DETECTOR, detector)}
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    namespace: dict = {}
    found = samples()
    assert {kind for kind, _, _ in found} == set(kinds)
    for kind, language, code in found:
        url, names, folder = kinds[kind]
        code = as_tested(code, url, names)
        monkeypatch.chdir(folder)
        if language == "python":
            exec(compile(code, f"docs/client.md ({kind})", "exec"), namespace)
        else:
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True,
                                 env=environment, timeout=120)
            assert run.returncode == 0 and run.stdout and "error" not in run.stdout, f"{code}\n{run.stdout}\n{run.stderr}"
    assert sorted(namespace["answers"]) == list(range(10))
    assert namespace["batch"]["scores"].shape == (2, 2)
    assert (namespace["tutorial"]["scores"] == namespace["one"]["scores"]).all()
    assert namespace["results"]["scores"].shape == (1, 2)
    assert namespace["names"].tolist() == [["cat", "bird", "dog", "cat", "cat"]]
    assert [(d.class_name, d.box) for d in namespace["found"]] == [("cat", (10, 12, 50, 60)), ("bird", (5, 5, 9, 9))]
