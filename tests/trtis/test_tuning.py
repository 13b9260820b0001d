"""trtis.bench.tune: settings applied as an ensemble needs them, the choice over several levels,
and a real two-setting sweep of the tiny ensemble applied to a copy."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trtis import config, repository
from trtis.bench import tune

ROOT = Path(__file__).resolve().parents[2]


def test_a_setting_changes_counts_batching_and_keeps_kinds(tiny):
    configs = repository.read_configs(tiny.root)
    for size in (1, 4, 8):
        configs["tiny-affine"].model_warmup.add(name=f"batch {size}", batch_size=size)
    configs["tiny-affine"].instance_group.add(count=1, kind="KIND_GPU", gpus=[0])  # as convert.sh --gpus 0 writes
    configs["tiny-affine"].dynamic_batching.preferred_batch_size.extend([2, 4, 8])  # as convert.sh writes for GPUs
    configs["tiny-affine"].parameters[config.BATCH_BUCKETS].string_value = config.batch_buckets_text(8)
    originals = {name: c.SerializeToString() for name, c in configs.items()}
    changed = tune.configured(configs, "tiny-chain", tune.Setting({"tiny-text": 3, "tiny-affine": 2}, 4, 700))
    assert set(changed) == {"tiny-chain", "tiny-text", "tiny-affine", "tiny-head"}
    assert changed["tiny-text"].instance_group[0].count == 3, "a model without a group gets one"
    (group,) = changed["tiny-affine"].instance_group
    assert group.count == 2 and group.kind == group.KIND_GPU and list(group.gpus) == [0], "kind and GPUs kept"
    assert changed["tiny-head"].instance_group == configs["tiny-head"].instance_group, "not named: left as it is"
    assert {c.max_batch_size for c in changed.values()} == {4}, "the ensemble follows its steps"
    assert changed["tiny-head"].dynamic_batching.max_queue_delay_microseconds == 700
    assert not changed["tiny-chain"].HasField("dynamic_batching")
    assert [w.batch_size for w in changed["tiny-affine"].model_warmup] == [1, 4], "none over the new max batch"
    assert list(changed["tiny-affine"].dynamic_batching.preferred_batch_size) == [2, 4], "the server refuses more"
    assert changed["tiny-affine"].parameters[config.BATCH_BUCKETS].string_value == "1,2,4", "none warmed above it"
    assert changed["tiny-chain"].ensemble_scheduling == configs["tiny-chain"].ensemble_scheduling, "steps kept"
    assert {name: c.SerializeToString() for name, c in configs.items()} == originals, "the originals are left alone"
    kept = tune.configured(configs, "tiny-chain", tune.Setting({"tiny-head": 2}))
    assert kept["tiny-head"].max_batch_size == 8 and kept["tiny-head"].dynamic_batching.max_queue_delay_microseconds == 20000


def test_settings_the_server_would_refuse_are_refused_before_any_run(tiny):
    configs = repository.read_configs(tiny.root)
    with pytest.raises(ValueError, match=r"\['tiny-other'\], which 'tiny-chain' does not run"):
        tune.configured(configs, "tiny-chain", tune.Setting({"tiny-other": 1}))
    configs["tiny-affine"].platform = "tensorrt_plan"
    with pytest.raises(ValueError, match="built for batches up to 8; convert it again with --max-batch-size 16"):
        tune.configured(configs, "tiny-chain", tune.Setting({}, 16))
    configs["tiny-affine"].ClearField("platform")
    configs["tiny-affine"].backend = "torch_compile"  # an exported program bounds its batch axis too
    with pytest.raises(ValueError, match="convert it again"):
        tune.configured(configs, "tiny-chain", tune.Setting({}, 16))


def test_the_grid_and_labels():
    grid = tune.grid({"pre": [1, 2], "net": [1]}, [8], [0, 500])
    assert [s.label() for s in grid] == ["instances 1/1, max batch 8, delay 0 us", "instances 1/1, max batch 8, delay 500 us",
                                         "instances 2/1, max batch 8, delay 0 us", "instances 2/1, max batch 8, delay 500 us"]
    assert tune.Setting().label() == "as configured"


def _result(label: str, throughputs: dict[int, float], errors: int = 0) -> dict:
    return {"setting": {"label": label}, "label": label,
            "levels": [{"concurrency": c, "throughput": t, "errors": errors, "p50_ms": 1.0, "p99_ms": 2.0}
                       for c, t in throughputs.items()]}


def test_the_choice_is_made_over_every_level_together():
    peaky = _result("peaky", {1: 1.6, 2: 1.9, 8: 3.0})      # best at 8, poor at 1
    even = _result("even", {1: 2.6, 2: 2.7, 8: 2.8})
    broken = _result("broken", {1: 9.0, 2: 9.0, 8: 9.0}, errors=1)
    best = tune.select([peaky, even, broken], tune.best_served([peaky, even]))
    assert best["label"] == "even" and best["concurrency"] == 8 and best["score"] == round(2.8 / 3.0, 3)
    in_process = tune.report([peaky, even], "t", "d", "today", in_process=2.84)
    assert in_process["best"]["label"] == "even" and in_process["best"]["concurrency"] == 1
    assert in_process["best"]["ratios"] == {"1": round(2.6 / 2.84, 3), "2": round(2.7 / 2.84, 3), "8": round(2.8 / 2.84, 3)}
    tied = tune.select([_result("a", {1: 1.0, 2: 1.0}), _result("b", {1: 0.98, 2: 1.5})], {1: 1.0, 2: 1.0})
    assert tied["label"] == "b", "within 3% of the best worst level, the higher mean wins"


def test_the_performance_doc_sweep_of_two_settings_chooses_reports_and_applies_to_a_copy(tiny, tmp_path):
    """The doc's ``python -m trtis.bench tune`` line, with the tiny model, a copy of its repository,
    two settings and short levels appended (the last value of an option wins)."""
    text = (ROOT / "docs" / "performance" / "README.md").read_text()
    (command,) = re.findall(r"^python -m trtis\.bench tune .*$", text, flags=re.M)
    configs = repository.read_configs(tiny.root)
    copy = tune.scratch_repository(tiny.root, configs, tmp_path / "repository")
    (tmp_path / "one.txt").write_text("1.5")
    run = subprocess.run([sys.executable, *command.split()[1:], "--model", "tiny-chain", "--model-repository",
                          str(copy), "--instances", "tiny-affine=1,2", "--max-queue-delay-us", "0",
                          "--input-files", str(tmp_path / "one.txt"), "--concurrency", "1", "2", "--seconds", "0.5",
                          "--warmup", "0.2", "--apply", "--output", str(tmp_path), "--name", "sweep"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["setting"]["instances"] for r in found["results"]] == [{"tiny-affine": 1}, {"tiny-affine": 2}]
    for result in found["results"]:
        assert [level["concurrency"] for level in result["levels"]] == [1, 2]
        assert all(level["errors"] == 0 and level["throughput"] > 0 for level in result["levels"])
    assert found["reference"]["name"] == "in process" and found["best"]["score"] > 0
    applied = repository.read_configs(copy)
    assert applied["tiny-affine"].instance_group[0].count == found["best"]["setting"]["instances"]["tiny-affine"]
    assert applied["tiny-text"].dynamic_batching.max_queue_delay_microseconds == 0
    assert "**(best)**" in (tmp_path / "sweep.md").read_text()
    assert repository.read_configs(tiny.root) == configs, "the source repository is untouched"
