"""tune.sh: settings applied to the configs as an ensemble needs them, and a short real sweep."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from detection import pipeline
from detection.tune import Setting, configured, scratch_repository
from trtis import repository

TUNE = Path(__file__).resolve().parents[2] / "example" / "detection" / "tune.sh"


def test_a_setting_changes_counts_batching_and_keeps_kinds(detection_repository):
    configs = repository.read_configs(detection_repository[0])
    for size in (1, 4, 8):  # as convert.sh warms GPU networks up
        configs[pipeline.NETWORK].model_warmup.add(name=f"batch {size}", batch_size=size)
    originals = {name: c.SerializeToString() for name, c in configs.items()}
    changed = configured(configs, Setting(3, 2, 1, 4, 700))
    assert changed[pipeline.PREPROCESS].instance_group[0].count == 3
    assert changed[pipeline.NETWORK].instance_group[0].count == 2
    assert changed[pipeline.NETWORK].instance_group[0].kind == configs[pipeline.NETWORK].instance_group[0].kind
    assert {c.max_batch_size for c in changed.values()} == {4}, "the ensemble follows its steps"
    assert changed[pipeline.POSTPROCESS].dynamic_batching.max_queue_delay_microseconds == 700
    assert not changed[pipeline.ENSEMBLE].HasField("dynamic_batching")
    assert [w.batch_size for w in changed[pipeline.NETWORK].model_warmup] == [1, 4], "none over the new max batch"
    assert {name: c.SerializeToString() for name, c in configs.items()} == originals, "the originals are left alone"


def test_a_tensorrt_plan_is_not_given_a_larger_batch_than_it_was_built_for(detection_repository):
    configs = repository.read_configs(detection_repository[0])
    configs[pipeline.NETWORK].platform = "tensorrt_plan"
    with pytest.raises(ValueError, match="rebuild it"):
        configured(configs, Setting(1, 1, 1, configs[pipeline.NETWORK].max_batch_size * 2, 0))


def test_tune_sh_measures_each_setting_and_applies_the_best(detection_repository, tmp_path):
    configs = repository.read_configs(detection_repository[0])
    linked = scratch_repository(detection_repository[0], configs, tmp_path / "repo")
    run = subprocess.run([str(TUNE), "--model-repository", str(linked), "--preprocess-instances", "1",
                          "--network-instances", "1", "2", "--max-batch-size", "4", "--max-queue-delay-us", "500",
                          "--concurrency", "2", "--seconds", "2", "--warmup", "1", "--images", "2", "--apply",
                          "--output", str(tmp_path), "--name", "ci"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "ci.json").read_text())
    assert [r["setting"]["network_instances"] for r in report["results"]] == [1, 2]
    for result in report["results"]:
        (level,) = result["levels"]
        assert level["concurrency"] == 2 and level["errors"] == 0 and level["throughput"] > 0
    best = report["best"]["setting"]
    applied = repository.read_configs(linked)
    assert applied[pipeline.NETWORK].instance_group[0].count == best["network_instances"]
    assert applied[pipeline.ENSEMBLE].max_batch_size == 4
    assert "**(best)**" in (tmp_path / "ci.md").read_text()
    assert repository.read_configs(detection_repository[0]) == configs, "the source repository is untouched"
