"""docs/client.md's code, run as written: every fenced block is marked ``<!-- test: client -->``
(the tiny server) or ``<!-- test: client tls -->`` (a tiny server with TLS and an inference key).

The samples speak of the detection example; against the tiny models only the names below change.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from client_harness import make_certificates, tritonserver

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
INFERENCE_KEY = "a-key-for-the-docs-test-0123456789"
NAMES = {'"detection"': '"tiny-chain"', "--model detection": "--model tiny-chain", '"raw_image"': '"text"'}
MARKED = re.compile(r"<!-- test: (client(?: tls)?) -->\n```(python|bash)\n(.*?)```", re.S)


def samples() -> list[tuple[str, str, str]]:
    """(server, language, code) of every marked block, in the page's order."""
    text = DOC.read_text()
    found = MARKED.findall(text)
    assert len(found) == text.count("```") // 2, "a code block of docs/client.md is not marked to be tested"
    return found


@pytest.fixture(scope="module")
def tls_server(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs_tls")
    certificates = make_certificates(folder)
    flags = ["--grpc-use-ssl=true", f"--grpc-server-cert={certificates['server.pem']}",
             f"--grpc-server-key={certificates['server.key']}",
             f"--grpc-restricted-protocol=inference,metadata,model-config:inference-key={INFERENCE_KEY}"]
    with tritonserver(tiny.root, flags, folder) as server:
        yield server, certificates["ca.pem"]


def as_tested(code: str, url: str) -> str:
    for written, tested in {"127.0.0.1:7001": url, "127.0.0.1:7101": url, **NAMES}.items():
        code = code.replace(written, tested)
    assert "detection" not in code and "raw_image" not in code, code
    return code


def test_every_sample_of_the_client_page_runs(tiny_server, tls_server, tmp_path, monkeypatch):
    server, ca = tls_server
    (tmp_path / "image.jpg").write_bytes(b"2.5")  # what the tiny chain takes: a number as text
    (tmp_path / "ca.pem").write_bytes(ca.read_bytes())
    (tmp_path / "inference.key").write_text(INFERENCE_KEY + "\n")
    monkeypatch.chdir(tmp_path)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    namespace: dict = {}
    found = samples()
    assert {kind for kind, _, _ in found} == {"client", "client tls"}
    for kind, language, code in found:
        code = as_tested(code, server.grpc_url if kind == "client tls" else tiny_server.grpc_url)
        if language == "python":
            exec(compile(code, f"docs/client.md ({kind})", "exec"), namespace)
        else:
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True,
                                 env=environment, timeout=120)
            assert run.returncode == 0, f"{code}\n{run.stdout}\n{run.stderr}"
            assert run.stdout.count('"outputs"') >= 1 and '"error"' not in run.stdout, run.stdout
    assert sorted(namespace["answers"]) == list(range(10))
    assert namespace["batch"]["scores"].shape == (2, 2)
    assert (namespace["tutorial"]["scores"] == namespace["one"]["scores"]).all()
    assert namespace["results"]["scores"].shape == (1, 2)
