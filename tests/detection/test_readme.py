"""The README's client samples, run as written against the served detection example
(only the address changes: the test server listens on a free port)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def client_samples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The client: `trt_client`"):text.index("## Tests")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_client_samples_run_as_written(detection_server, tmp_path, monkeypatch):
    samples = client_samples()
    assert len(samples) >= 2 and "client.Inference(url=\"127.0.0.1:7001\"" in samples[0]
    shutil.copy(ROOT / "example" / "test-data" / "3_000000.jpg", tmp_path / "xxx.jpg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for sample in samples[:2]:
        exec(sample.replace("127.0.0.1:7001", detection_server.grpc_url), namespace)
    assert set(namespace["results"]) == {"boxes", "scores", "classes"}
    assert namespace["results"]["boxes"].shape == (1, 100, 4)
    assert namespace["input_id"].startswith("image_")
    np.testing.assert_array_equal(namespace["results"]["scores"], namespace["runner"].run(
        input={"raw_image": np.array([(tmp_path / "xxx.jpg").read_bytes()], dtype=bytes)})["scores"])
