"""The synthetic dataset, a short CPU training run, and the evaluation through the real server."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO

from detection import dataset, train
from detection.network import load_network

ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_images_and_boxes():
    a, b = dataset.generate(3, 11), dataset.generate(3, 11)
    assert a.jpeg == b.jpeg and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.classes, b.classes)
    assert dataset.generate(4, 11).jpeg != a.jpeg and dataset.generate(3, 12).jpeg != a.jpeg


def test_split_is_valid_coco_with_boxes_inside_and_every_class(tmp_path):
    coco = dataset.coco_split(3, 30, tmp_path)
    assert len(list(tmp_path.glob("*.jpg"))) == 30
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    for annotation in coco["annotations"]:
        x, y, w, h = annotation["bbox"]
        width, height = sizes[annotation["image_id"]]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width and y + h <= height
        assert 1 <= annotation["category_id"] <= len(dataset.CLASSES)
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, len(dataset.CLASSES) + 1))
    sides = [max(a["bbox"][2:]) for a in coco["annotations"]]
    assert min(sides) < 30 and max(sides) > 120, "objects from small to large"
    loaded = COCO()
    loaded.dataset = coco
    loaded.createIndex()
    assert len(loaded.getImgIds()) == 30


def test_training_refuses_a_configuration_that_makes_no_batch(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        train.main(["--output", str(tmp_path), "--device", "cpu", "--images", "8", "--batch-size", "32"])
    assert "--images 8 makes no batch of --batch-size 32" in capsys.readouterr().err


def test_a_short_cpu_training_run_lowers_the_loss_and_resumes(tmp_path):
    common = ["--device", "cpu", "--input-size", "128", "--images", "4", "--batch-size", "4", "--workers", "0",
              "--lr", "1e-3", "--warmup", "4"]
    assert train.main(["--output", str(tmp_path), "--iterations", "40", "--save-every", "20", *common]) == 0
    losses = [entry["loss"] for entry in json.loads((tmp_path / "training_log.json").read_text())]
    assert losses[-1] < losses[0], losses
    record = json.loads((tmp_path / "centernet_dlav0_34.json").read_text())
    assert record["class_names"] == list(dataset.CLASSES) and record["training"]["iterations"] == 40
    network, _ = load_network(tmp_path / "centernet_dlav0_34.pth")
    assert network.hm[2].weight.dtype == torch.float32
    last = torch.load(tmp_path / "model_last.pth", weights_only=True)
    assert last["iteration"] == 40 and "optimizer" in last
    resumed = tmp_path / "resumed"
    assert train.main(["--output", str(resumed), "--iterations", "50", "--resume", str(tmp_path / "model_last.pth"),
                       *common]) == 0
    assert json.loads((resumed / "centernet_dlav0_34.json").read_text())["training"]["iterations"] == 50


def test_evaluation_through_the_server_agrees_with_in_process(detection_server, tmp_path):
    from served_repository import INPUT_SIZE

    run = subprocess.run([sys.executable, str(ROOT / "example" / "detection" / "evaluate.py"), "--seed", "3",
                          "--num-images", "8", "--url", detection_server.grpc_url, "--input-size", str(INPUT_SIZE),
                          "--report", str(tmp_path / "report.md")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["served"] and set(result) >= {"map", "map50", "inprocess_map"}
    assert abs(result["map"] - result["inprocess_map"]) <= 0.02
    assert result["map50"] > 0.5, "the shipped weights detect the shapes"
    assert "| served (Triton ensemble" in (tmp_path / "report.md").read_text()
