"""tune.sh as docs/performance/README.md shows it, for two short settings on a copy of the repository,
judged against the pipeline in process at each level."""
from __future__ import annotations

import json
import subprocess

from detection import pipeline
from test_bench import doc_command
from trtis import repository
from trtis.bench.tune import scratch_repository


def test_the_doc_tune_command_measures_each_setting_against_in_process_and_applies_the_best(detection_repository,
                                                                                            tmp_path):
    configs = repository.read_configs(detection_repository[0])
    linked = scratch_repository(detection_repository[0], configs, tmp_path / "repo")
    run = subprocess.run([*doc_command("tune.sh"), "--model-repository", str(linked), "--preprocess-instances", "1",
                          "--network-instances", "1", "2", "--network-threads", "1", "--max-batch-size", "4",
                          "--max-queue-delay-us", "500",
                          "--concurrency", "1", "2", "--seconds", "2", "--warmup", "1", "--images", "2",
                          "--apply", "--output", str(tmp_path), "--name", "ci"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "ci.json").read_text())
    assert [r["setting"]["instances"][pipeline.NETWORK] for r in report["results"]] == [1, 2]
    assert all(r["setting"]["threads"] == {pipeline.NETWORK: 1} for r in report["results"])
    reference = report["reference"]
    assert reference["name"] == "in process" and list(reference["throughput"]) == ["1", "2"]
    assert report["reproduce"].startswith(
        "example/detection/tune.sh --preprocess-instances 1 --network-instances 1 2 --postprocess-instances 1 "
        "--network-threads 1 --max-batch-size 4 --max-queue-delay-us 500 --concurrency 1 2 --name my-machine"), \
        "the command for another machine is this sweep"
    assert all(value > 0 for value in reference["throughput"].values()), "measured at each level"
    assert set(report["best"]["ratios"]) == {"1", "2"}
    for result in report["results"]:
        assert [level["concurrency"] for level in result["levels"]] == [1, 2]
        assert all(level["errors"] == 0 and level["throughput"] > 0 for level in result["levels"])
        assert all(set(level["triton"]) == {pipeline.PREPROCESS, pipeline.NETWORK, pipeline.POSTPROCESS}
                   for level in result["levels"])
    best = report["best"]["setting"]
    applied = repository.read_configs(linked)
    assert applied[pipeline.NETWORK].instance_group[0].count == best["instances"][pipeline.NETWORK]
    assert applied[pipeline.ENSEMBLE].max_batch_size == 4
    assert applied[pipeline.NETWORK].parameters["intra_op_thread_count"].string_value == "1"
    markdown = (tmp_path / "ci.md").read_text()
    assert "**(best)**" in markdown and "detection-network threads 1" in markdown and "| vs in process |" in markdown
    assert repository.read_configs(detection_repository[0]) == configs, "the source repository is untouched"
