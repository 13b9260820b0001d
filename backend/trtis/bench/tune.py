"""The tuning sweep: instance counts and intra-op threads per model, max batch size and
dynamic-batching queue delay, each setting served from a scratch repository and measured at
several concurrency levels.

Selection, over the levels together: a setting's score is its worst ratio, over the levels, of
its throughput to a reference at that level; the highest score wins, and within 3% of it the
higher mean ratio. The reference is the model run in process (no server) where that was
measured, with as many requests in flight as the level (``baselines.in_process_levels``), so the
winner is the setting whose worst level comes closest to (or beyond) the in-process pipeline;
otherwise it is the best throughput any setting reached at that level, so every level counts
alike however different their throughputs. A setting with errors scores 0.
"""
from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from trtis import config as trtis_config
from trtis import repository
from trtis.bench import ensembles, load as load_generator
from trtis.bench.plan import Load, Target
from trtis.config import ModelConfig
from trtis.serving import ServerConfig, serve

TIE = 0.97  # scores within 3% of the best are a tie
RULE = ("the highest worst-level ratio of throughput to the reference (ties within 3%: the higher mean ratio); "
        "settings with errors are last.")


@dataclass(frozen=True)
class Setting:
    """Instance counts by model name (per GPU for GPU groups), and a max batch size and queue
    delay for every batching model; None keeps what the repository has. ``threads`` sets models'
    ``intra_op_thread_count`` (threads per instance; 0: the runtime's default, every core)."""

    instances: Mapping[str, int] = field(default_factory=dict)
    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    threads: Mapping[str, int] = field(default_factory=dict)

    def label(self) -> str:
        parts = [f"instances {'/'.join(str(n) for n in self.instances.values())}"] if self.instances else []
        parts += [f"{model} threads {n}" for model, n in self.threads.items()]
        if self.max_batch_size is not None:
            parts.append(f"max batch {self.max_batch_size}")
        if self.max_queue_delay_us is not None:
            parts.append(f"delay {self.max_queue_delay_us} us")
        return ", ".join(parts) or "as configured"

    def as_dict(self) -> dict:
        return {"instances": dict(self.instances), "max_batch_size": self.max_batch_size,
                "max_queue_delay_us": self.max_queue_delay_us, "threads": dict(self.threads)}


def grid(instances: Mapping[str, Sequence[int]], max_batch_sizes: Sequence[int | None] = (None,),
         max_queue_delays_us: Sequence[int | None] = (None,),
         threads: Mapping[str, Sequence[int]] | None = None) -> list[Setting]:
    """Every combination, instance counts varying slowest in the order given, then threads."""
    names, threaded = list(instances), list(threads or {})
    return [Setting(dict(zip(names, counts)), batch, delay, dict(zip(threaded, per_model)))
            for counts in itertools.product(*(instances[n] for n in names))
            for per_model in itertools.product(*((threads or {})[n] for n in threaded))
            for batch in max_batch_sizes for delay in max_queue_delays_us]


def _keep(field, keep) -> None:
    """Keep the items of a repeated protobuf field that ``keep`` accepts, in order."""
    kept = [item for item in field if keep(item)]
    del field[:]
    field.extend(kept)


def configured(configs: Mapping[str, ModelConfig], model: str, setting: Setting) -> dict[str, ModelConfig]:
    """The configs of ``model`` and its composing models with ``setting`` applied (the originals are
    left alone): instance counts (kinds and GPU lists kept), threads, the max batch size of every
    batching model and ensemble (warm-ups and preferred batch sizes above it dropped, a compiled
    network's batch buckets as convert would write them), the queue delay of every batching model."""
    models = ensembles.composing_models(configs, model)
    for what, chosen in (("instance counts", setting.instances), ("threads", setting.threads)):
        unknown = sorted(set(chosen) - set(models))
        if unknown:
            raise ValueError(f"{what} for {unknown}, which {model!r} does not run (it runs {models})")
    negative = {name: n for name, n in setting.threads.items() if n < 0}
    if negative:
        raise ValueError(f"threads {negative}: give 1 or more per instance, or 0 for the runtime's default")
    result = {}
    for name in [model, *models]:
        changed = ModelConfig()
        changed.CopyFrom(configs[name])
        batch = setting.max_batch_size
        if batch is not None and changed.max_batch_size > 0:
            bounded = changed.platform == "tensorrt_plan" or changed.backend == "torch_compile"
            if bounded and batch > changed.max_batch_size:
                raise ValueError(f"{name}: its model file was built for batches up to {changed.max_batch_size}; "
                                 f"convert it again with --max-batch-size {batch} (or more) to try {batch}")
            changed.max_batch_size = batch
            _keep(changed.model_warmup, lambda w: w.batch_size <= batch)  # the server refuses larger ones
            if changed.HasField("dynamic_batching"):  # (shares a oneof with ensemble_scheduling: never set it there)
                _keep(changed.dynamic_batching.preferred_batch_size, lambda n: n <= batch)  # likewise
            if trtis_config.BATCH_BUCKETS in changed.parameters:  # each is warmed at load: none above the max
                changed.parameters[trtis_config.BATCH_BUCKETS].string_value = trtis_config.batch_buckets_text(batch)
        if name in setting.instances:
            if not changed.instance_group:
                changed.instance_group.add()  # kind AUTO, as Triton's default group
            for group in changed.instance_group:
                group.count = setting.instances[name]
        if name in setting.threads:
            changed.parameters["intra_op_thread_count"].string_value = str(setting.threads[name])
        if setting.max_queue_delay_us is not None and changed.platform != "ensemble" and changed.max_batch_size > 0:
            changed.dynamic_batching.max_queue_delay_microseconds = setting.max_queue_delay_us
        result[name] = changed
    repository.validate({**configs, **result}.values())
    return result


def scratch_repository(source: Path, configs: Mapping[str, ModelConfig], destination: Path) -> Path:
    """A repository of ``configs`` whose model files link to ``source``'s (nothing is copied)."""
    for name in configs:
        folder = destination / name
        folder.mkdir(parents=True)
        for item in (source / name).iterdir():
            if item.name != "config.pbtxt":
                (folder / item.name).symlink_to(item.resolve(), target_is_directory=item.is_dir())
    apply(destination, configs)
    return destination


def apply(root: Path, configs: Mapping[str, ModelConfig]) -> None:
    """Write ``configs`` into the repository at ``root`` (each ``config.pbtxt`` replaced atomically)."""
    for name, config in configs.items():
        path = Path(root) / name / "config.pbtxt"
        staging = path.with_name(".config.pbtxt.tmp")
        staging.write_text(trtis_config.to_text(config))
        os.replace(staging, path)


def measure(source: Path, model: str, configs: Mapping[str, ModelConfig], load: Load) -> list[dict]:
    """Serve ``configs`` from a scratch repository and measure ``model`` at each of ``load.levels``."""
    models = ensembles.composing_models(configs, model)
    with tempfile.TemporaryDirectory(prefix="tune-") as scratch:
        root = scratch_repository(Path(source), configs, Path(scratch) / "repository")
        with serve(root, ServerConfig(timeout=600)) as server:
            target = Target(server.grpc_url, model, metrics_url=server.metrics_url)
            return [load_generator.measure(target, load, level, models) for level in load.levels]


def sweep(source: Path | str, model: str, settings: Sequence[Setting], load: Load, progress: bool = True) -> list[dict]:
    """Each setting measured at each level: ``{"setting", "label", "levels"}`` per setting."""
    source = Path(source).resolve()
    configs = repository.read_configs(source)
    checked = [(setting, configured(configs, model, setting)) for setting in settings]  # refuse before any run
    results = []
    bar = tqdm(checked, desc="tune", unit="setting", disable=not progress)
    for setting, changed in bar:
        rows = measure(source, model, changed, load)
        results.append({"setting": setting.as_dict(), "label": setting.label(), "levels": rows})
        bar.write(f"{setting.label()}: " + ", ".join(f"c{r['concurrency']} {r['throughput']} req/s" for r in rows))
    return results


def best_served(results: Sequence[dict]) -> dict[int, float]:
    """The highest throughput any setting reached, per concurrency level."""
    best: dict[int, float] = {}
    for result in results:
        for row in result["levels"]:
            best[row["concurrency"]] = max(best.get(row["concurrency"], 0.0), row["throughput"])
    return best


def select(results: Sequence[dict], reference: Mapping[int, float]) -> dict:
    """The winning setting by the module's rule, with its score and its ratio at each level."""
    if not results:
        raise ValueError("no results to choose from")
    scored = []
    for result in results:
        ratios = {row["concurrency"]: row["throughput"] / reference[row["concurrency"]]
                  if reference[row["concurrency"]] > 0 else 0.0 for row in result["levels"]}
        failed = any(row["errors"] for row in result["levels"])
        score = 0.0 if failed else min(ratios.values())
        scored.append((score, sum(ratios.values()) / len(ratios), result, ratios))
    top = max(s[0] for s in scored)
    score, _, result, ratios = max((s for s in scored if s[0] >= TIE * top), key=lambda s: s[1])
    worst = min(result["levels"], key=lambda row: ratios[row["concurrency"]])
    return {"setting": result["setting"], "label": result["label"], "score": round(score, 3),
            "ratios": {str(c): round(r, 3) for c, r in ratios.items()}, "concurrency": worst["concurrency"],
            "throughput": worst["throughput"], "p50_ms": worst["p50_ms"], "p99_ms": worst["p99_ms"]}


def markdown(report: dict) -> str:
    models = list(report["results"][0]["levels"][0]["triton"]) if report["results"] else []
    reference = report.get("reference", {})
    lines = [report["title"], "", f"Models (instances in this order): {', '.join(models)}.", "",
             f"| setting | concurrency | req/s | vs {reference.get('name', 'reference')} | p50 ms | p99 ms | errors | "
             "average batch per model |", "| --- " * 8 + "|"]
    best = report["best"]
    for result in report["results"]:
        mark = " **(best)**" if result["setting"] == best["setting"] else ""
        for level in result["levels"]:
            ref = reference.get("throughput", {}).get(str(level["concurrency"]))
            versus = f"{level['throughput'] / ref:.2f}x" if ref else "-"
            batches = " / ".join(str(level["triton"].get(m, {}).get("average_batch")) for m in models)
            lines.append(f"| {result['label']}{mark} | {level['concurrency']} | {level['throughput']} | {versus} | "
                         f"{level['p50_ms']} | {level['p99_ms']} | {level['errors']} | {batches} |")
    versus = f", {best['score']:.2f}x of the {reference['name']}" if "score" in best else ""
    lines += ["", f"Best: {best['label']}. Its worst level is concurrency {best['concurrency']}: "
              f"{best['throughput']} requests/s{versus}, p50 {best['p50_ms']} ms."]
    if report.get("rule"):
        lines += ["", f"Rule: {report['rule']}"]
    if report.get("reproduce"):
        lines += ["", f"Measure your own machine: `{report['reproduce']}`"]
    return "\n".join(lines) + "\n"


def report(results: list[dict], title: str, device: str, date: str,
           in_process: float | Mapping[int, float] | None = None, reproduce: str | None = None) -> dict:
    """The sweep's report; ``in_process`` (requests/s, one figure or one per level) is the reference."""
    if in_process is not None:
        levels = [row["concurrency"] for row in results[0]["levels"]]
        per_level = in_process if isinstance(in_process, Mapping) else dict.fromkeys(levels, in_process)
        name, reference = "in process", {level: per_level[level] for level in levels}
    else:
        name, reference = "best served", best_served(results)
    return {"title": title, "device": device, "date": date, "results": results, "best": select(results, reference),
            "rule": RULE, "reference": {"name": name, "throughput": {str(c): v for c, v in reference.items()}},
            "reproduce": reproduce}


def write(report: dict, output: Path, name: str) -> list[Path]:
    """``NAME.json`` and ``NAME.md`` in ``output``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = [output / f"{name}.json", output / f"{name}.md"]
    paths[0].write_text(json.dumps(report, indent=1) + "\n")
    paths[1].write_text(markdown(report))
    return paths
