"""accuracy_split as a user runs it: its reference row is evaluate's in-process mAP, and its FP16
network is the served compiled network's FP16 form."""
from __future__ import annotations

import copy
import math
import subprocess
from pathlib import Path

import numpy as np
import torch

from detection import dataset, letterbox, pipeline
from detection.accuracy import in_process, score
from detection.accuracy_split import VARIANTS, half_network
from detection.postprocess import DecodedDetector
from detection.reference import ReferencePipeline
from served_repository import INPUT_SIZE

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / "example" / "detection" / "python.sh"
SEED, COUNT = dataset.SPLIT_SEEDS["test"], 4


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_the_split_scores_every_variant_and_its_reference_is_the_in_process_map(network, tmp_path):
    report = tmp_path / "split.md"
    run = subprocess.run([str(PYTHON), "-m", "detection.accuracy_split", "--num-images", str(COUNT),
                          "--input-size", str(INPUT_SIZE), "--report", str(report)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {cells(line)[0]: cells(line)[1:] for line in run.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")}
    assert list(rows) == ["variant", *(variant.name for variant in VARIANTS)]
    for variant in VARIANTS:  # on this CPU: the GPU's variants are named, with the reason they did not run
        values = rows[variant.name]
        if variant.needs_gpu:
            assert values[0] == "not run: needs a CUDA device", (variant.name, values)
        else:
            assert all(math.isfinite(float(value)) for value in values), (variant.name, values)
    images = [dataset.generate(SEED, i).jpeg for i in range(COUNT)]
    expected = score(dataset.coco_split(SEED, COUNT), in_process(ReferencePipeline(network, INPUT_SIZE), images))
    assert rows[VARIANTS[0].name][:4] == [f"{expected['map']:.4f}", f"{expected['map50']:.4f}", "+0.00", "+0.00"]
    assert run.stdout.split("Report written to")[0].strip() in report.read_text()


def test_the_fp16_network_detects_as_the_served_decoded_network(network):
    images = [dataset.generate(SEED, i).jpeg for i in range(2)]
    ours = ReferencePipeline(half_network(network), INPUT_SIZE)(images)
    served = DecodedDetector.half_network(DecodedDetector(copy.deepcopy(network).to(memory_format=torch.channels_last)))
    image, meta_affine, meta_size = letterbox.preprocess_batch(images, INPUT_SIZE)
    with torch.inference_mode():
        boxes, scores, classes = served(*(torch.from_numpy(a) for a in (image, meta_affine, meta_size)))
    np.testing.assert_array_equal(ours[pipeline.BOXES], boxes.numpy())
    np.testing.assert_array_equal(ours[pipeline.SCORES], scores.numpy())
    np.testing.assert_array_equal(ours[pipeline.CLASSES], classes.numpy())


def test_a_device_it_cannot_use_is_refused_with_the_reason():
    for device, reason in (("gpu", "use cpu or cuda"), ("cuda:7", "CUDA device(s) here")):
        run = subprocess.run([str(PYTHON), "-m", "detection.accuracy_split", "--device", device, "--num-images", "1"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and f"--device {device}: " in run.stderr and reason in run.stderr, run.stderr[-500:]
