"""``tune.sh``: sweep the served models' instance counts and dynamic batching; report and keep the best.

For each setting the repository's configs are rewritten into a scratch repository (the model
files are linked, not copied), the embedded server is started on it on free ports, and bench.sh's
load generator measures it at the given concurrency levels. The setting with the highest
throughput wins (the lower p50 latency breaks ties within 3%); ``--apply`` writes it into the
repository.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from detection import pipeline
from detection.bench import load_images, served_level
from trtis import config as trtis_config
from trtis import repository
from trtis.config import ModelConfig
from trtis.serving import launcher

ROOT = Path(__file__).resolve().parents[2]
COMPOSING = (pipeline.PREPROCESS, pipeline.NETWORK, pipeline.POSTPROCESS)


@dataclass(frozen=True)
class Setting:
    preprocess_instances: int
    network_instances: int
    postprocess_instances: int
    max_batch_size: int
    max_queue_delay_us: int

    def label(self) -> str:
        return (f"instances {self.preprocess_instances}/{self.network_instances}/{self.postprocess_instances}, "
                f"max batch {self.max_batch_size}, delay {self.max_queue_delay_us} us")


def configured(configs: dict[str, ModelConfig], setting: Setting) -> dict[str, ModelConfig]:
    """The repository's configs with ``setting`` applied: instance counts (per GPU for GPU groups;
    kinds and GPU lists are kept), every model's max batch size, the composing models' queue delay."""
    counts = dict(zip(COMPOSING, (setting.preprocess_instances, setting.network_instances,
                                  setting.postprocess_instances)))
    result = {}
    for name, original in configs.items():
        config = ModelConfig()
        config.CopyFrom(original)
        if original.platform == "tensorrt_plan" and setting.max_batch_size > original.max_batch_size:
            raise ValueError(f"{name}: a TensorRT plan was built for batches up to {original.max_batch_size}; "
                             f"rebuild it to try {setting.max_batch_size}")
        config.max_batch_size = setting.max_batch_size
        warmups = [w for w in config.model_warmup if w.batch_size <= setting.max_batch_size]
        del config.model_warmup[:]
        config.model_warmup.extend(warmups)  # the server refuses a warm-up batch over the max
        if name in counts:
            for group in config.instance_group:
                group.count = counts[name]
            config.dynamic_batching.max_queue_delay_microseconds = setting.max_queue_delay_us
        result[name] = config
    repository.validate(result.values())
    return result


def write_configs(root: Path, configs: dict[str, ModelConfig]) -> None:
    for name, config in configs.items():
        (root / name / "config.pbtxt").write_text(trtis_config.to_text(config))


def scratch_repository(source: Path, configs: dict[str, ModelConfig], destination: Path) -> Path:
    """A repository whose models link to ``source``'s files and carry ``configs``."""
    for name in configs:
        folder = destination / name
        folder.mkdir(parents=True)
        for item in (source / name).iterdir():
            if item.name != "config.pbtxt":
                (folder / item.name).symlink_to(item.resolve(), target_is_directory=item.is_dir())
    write_configs(destination, configs)
    return destination


def measure(source: Path, configs: dict[str, ModelConfig], images: list[bytes], levels: list[int],
            seconds: float, warmup: float) -> list[dict]:
    """Serve ``configs`` from a scratch repository and measure each concurrency level."""
    with tempfile.TemporaryDirectory(prefix="tune-") as scratch:
        root = scratch_repository(source, configs, Path(scratch) / "repository")
        ports = launcher.Ports(launcher.free_port(), launcher.free_port(), launcher.free_port())
        state = Path(scratch) / "state"
        launcher.start("embedded", root, "127.0.0.1", ports, state, timeout=600)
        try:
            return [served_level(f"127.0.0.1:{ports.grpc}", images, level, seconds, warmup) for level in levels]
        finally:
            launcher.stop(state)


def best(results: list[dict]) -> dict:
    """Highest throughput; within 3% of it, the lowest median latency."""
    top = max(r["throughput"] for r in results)
    return min((r for r in results if r["throughput"] >= 0.97 * top), key=lambda r: r["p50_ms"])


def markdown(report: dict) -> str:
    lines = [report["title"], "", "| setting (instances pre/net/post, max batch, queue delay) | concurrency | req/s | "
             "p50 ms | p99 ms | errors | network batch |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for result in report["results"]:
        for level in result["levels"]:
            mark = " **(best)**" if result["setting"] == report["best"]["setting"] and \
                level["throughput"] == report["best"]["throughput"] else ""
            lines.append(f"| {result['label']}{mark} | {level['concurrency']} | {level['throughput']} | "
                         f"{level['p50_ms']} | {level['p99_ms']} | {level['errors']} | "
                         f"{level['triton'][pipeline.NETWORK]['average_batch']} |")
    lines += ["", f"Best: {report['best']['label']} at concurrency {report['best']['concurrency']}: "
              f"{report['best']['throughput']} requests/s, p50 {report['best']['p50_ms']} ms."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tune.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--preprocess-instances", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--network-instances", type=int, nargs="+", default=[1, 2],
                        help="per GPU where the network's instance group is on GPUs")
    parser.add_argument("--postprocess-instances", type=int, nargs="+", default=[1])
    parser.add_argument("--max-batch-size", type=int, nargs="+", default=[8])
    parser.add_argument("--max-queue-delay-us", type=int, nargs="+", default=[0, 2000])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--images", type=int, default=32, help="generated test-split images sent round-robin")
    parser.add_argument("--image-dir", type=Path, nargs="*", help="send these images (files or folders) instead")
    parser.add_argument("--apply", action="store_true", help="write the best setting into the repository")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance")
    parser.add_argument("--name", default="tune-cpu", help="report file names: NAME.json, NAME.md")
    parser.add_argument("--device", default=f"{platform.machine()} CPU, {os.cpu_count()} cores")
    args = parser.parse_args(argv)
    source = args.model_repository.resolve()
    configs = repository.read_configs(source)
    if {*COMPOSING, pipeline.ENSEMBLE} - configs.keys():
        parser.error(f"{source} is not a detection repository: run convert.sh first")
    images, _ = load_images(args.image_dir, args.images)
    grid = [Setting(*values) for values in itertools.product(
        args.preprocess_instances, args.network_instances, args.postprocess_instances, args.max_batch_size,
        args.max_queue_delay_us)]
    results = []
    try:
        for setting in tqdm(grid, desc="tune", unit="setting"):
            levels = measure(source, configured(configs, setting), images, args.concurrency, args.seconds, args.warmup)
            results.append({"setting": asdict(setting), "label": setting.label(), "levels": levels})
            tqdm.write(f"{setting.label()}: " + ", ".join(f"c{l['concurrency']} {l['throughput']} req/s" for l in levels))
    except (ValueError, launcher.LaunchError) as error:
        print(f"tune.sh: {error}", file=sys.stderr)
        return 1
    winner = best([{**level, "setting": r["setting"], "label": r["label"]} for r in results for level in r["levels"]])
    report = {"title": f"Tuning sweep, {args.device}, {time.strftime('%Y-%m-%d')}; {args.seconds:g} s per level after "
                       f"{args.warmup:g} s warm-up, {len(images)} images round-robin.",
              "device": args.device, "date": time.strftime("%Y-%m-%d"), "results": results,
              "best": {k: winner[k] for k in ("setting", "label", "concurrency", "throughput", "p50_ms", "p99_ms")}}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.output / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))
    if args.apply:
        write_configs(source, configured(configs, Setting(**winner["setting"])))
        print(f"Applied to {source}: {winner['label']} (restart the server: ./start.sh --restart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
