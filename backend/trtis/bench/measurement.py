"""A benchmark of any served model, in the manner of perf_analyzer: throughput, latency and
Triton's statistics per concurrency level, and the baselines the figures are judged against.

    requests, source = requests_for(model_inputs(server.grpc_url, "my-model"), count=16)
    found = benchmark(Target(server.grpc_url, "my-model", metrics_url=server.metrics_url),
                      Load(requests, [1, 2, 4], seconds=5), Baselines("model_repository"), Titles(source=source))
    trtis.bench.report.write(found, "reports", "my-model")
"""
from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import replace

from tqdm import tqdm

from trtis.bench import ensembles, gpu_metrics, load as load_generator, statistics
from trtis.bench.baselines import alone_limit, in_process_levels, in_process_limit, naive_levels
from trtis.bench.in_process import InProcessModel
from trtis.bench.plan import Baselines, Load, Target, Titles

log = logging.getLogger(__name__)
BASELINE_KEYS = ("in_process", "in_process_levels", "naive", "network_limit", "network_device", "network_model")


def this_machine() -> str:
    """How reports name the machine unless told: architecture and cores."""
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def measure_served(target: Target, load: Load, progress: bool = True) -> dict:
    """The served model at each of ``load.levels``, with its settings and the GPU memory at rest."""
    configs = ensembles.served_configs(target.url, target.model, target.headers)
    models = ensembles.composing_models(configs, target.model)
    found: dict = {"model": target.model, "settings": statistics.settings(configs, models), "gpu_memory_at_rest_mib": {}}
    if target.metrics_url:
        try:
            found["gpu_memory_at_rest_mib"] = {str(g["gpu"]): g["memory_used_mib"]
                                               for g in gpu_metrics.read_settled(target.metrics_url)}
        except gpu_metrics.MetricsUnavailable as error:
            log.warning("%s; the report has no GPU figures (give the server's metrics URL to get them)", error)
            found["gpu_metrics_error"], target = str(error), replace(target, metrics_url=None)
    found["served"] = [load_generator.measure(target, load, level, models)
                       for level in tqdm(load.levels, desc="served", unit="level", disable=not progress)]
    return found


def measure_baselines(baselines: Baselines, model: str, load: Load, progress: bool = True) -> dict:
    """The model in process (best of the batch sizes, and with as many requests in flight as the
    clients keep at each level), the composing model ``baselines.alone`` per batch size, and the
    naive server at the levels up to ``baselines.naive_concurrency``, all on ``load.requests``."""
    with InProcessModel(baselines.repository, model, baselines.overrides) as runner:
        alone = baselines.alone
        device = runner.devices[alone or runner.models[0]]
        batches = baselines.batches
        if batches is None:
            batches = [1] if runner.configs[model].max_batch_size == 0 else \
                [1, 8] if device == "cpu" else [1, 8, 16, 32, 64]
        found = {"in_process": in_process_limit(runner, load.requests, batches, load.seconds),
                 "in_process_levels": in_process_levels(
                     runner, load.requests, [level * load.clients for level in load.levels], load.seconds, load.warmup,
                     lambda items: tqdm(items, desc="in process", unit="level", disable=not progress)),
                 "network_limit": alone_limit(runner, alone, load.requests, batches, load.seconds) if alone else [],
                 "network_device": device, "network_model": alone, "naive": []}
    chosen = [level for level in load.levels if level <= baselines.naive_concurrency]
    if baselines.naive and chosen:
        found["naive"] = naive_levels(baselines.repository, model, load.at(chosen), baselines.overrides,
                                      baselines.naive_port,
                                      lambda items: tqdm(items, desc="naive server", unit="level", disable=not progress))
    return found


def benchmark(target: Target, load: Load, baselines: Baselines = Baselines(), titles: Titles = Titles(),
              progress: bool = True) -> dict:
    """The whole report: the served levels, then the baselines (measured from
    ``baselines.repository``, taken from ``baselines.earlier``, or none), titled by ``titles``."""
    device = titles.device or this_machine()
    found = measure_served(target, load, progress)
    report = {"device": device, "date": time.strftime("%Y-%m-%d"), **found,
              "in_process": {"throughput": float("nan"), "batch": None}, "in_process_levels": [], "naive": [],
              "network_limit": [], "network_device": "cpu", "network_model": baselines.alone}
    if baselines.earlier is not None:
        report.update({key: baselines.earlier[key] for key in BASELINE_KEYS if key in baselines.earlier})
    elif baselines.repository is not None:
        report.update(measure_baselines(baselines, target.model, load, progress))
    who = f"{load.clients} client processes, each" if load.clients > 1 else "one client"
    report["title"] = (f"{titles.subject or f'Model {target.model}'}, {device}, {report['date']}; {who} with the "
                       f"concurrency shown (trt_client, gRPC); {load.seconds:g} s per level after {load.warmup:g} s "
                       "warm-up" + (f", {titles.source} round-robin." if titles.source else "."))
    report["columns"] = [list(c) for c in titles.columns] if titles.columns else None
    report["reproduce"] = titles.reproduce
    return report
