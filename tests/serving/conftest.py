"""Fixtures of the serving tests: certificates made here with openssl, and a light Python model."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from trtis import config, repository

ECHO = b'''import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("echo", pb_utils.get_input_tensor_by_name(r, "data")
                                                            .as_numpy())]) for r in requests]
'''


@pytest.fixture(scope="session")
def echo_model() -> repository.Model:
    """A model of the plain ``python`` backend that answers ``data`` [FP32, 4] with itself."""
    echo = config.model_config("echo", backend="python", max_batch_size=8, inputs=[config.Tensor("data", np.float32, [4])],
                               outputs=[config.Tensor("echo", np.float32, [4])])
    return repository.Model(echo, ECHO)


@pytest.fixture(scope="session")
def echo_repository(echo_model, tmp_path_factory) -> Path:
    """A repository of the echo model alone: the quickest server to start."""
    root = tmp_path_factory.mktemp("echo_repository")
    repository.write_repository(root, [echo_model])
    return root


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """A CA; a server certificate for 127.0.0.1 and localhost and a client certificate it signed; a
    client certificate of another CA (EC P-256, valid a day)."""
    folder = tmp_path_factory.mktemp("certificates")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "1", "-subj", f"/CN={ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=folder)
    leaves = {"server": ("ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
              "client": ("ca", "extendedKeyUsage=clientAuth\n"), "stranger": ("other-ca", "extendedKeyUsage=clientAuth\n")}
    for name, (ca, extensions) in leaves.items():
        (folder / f"{name}.ext").write_text(extensions)
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=folder)
    return {path.name: path for path in [*folder.glob("*.pem"), *folder.glob("*.key")]}
