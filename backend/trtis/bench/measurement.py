"""A benchmark of any served model, in the manner of perf_analyzer: throughput, latency and
Triton's statistics per concurrency level, and the baselines the figures are judged against.

    requests, source = requests_for(model_inputs(server.grpc_url, "my-model"), count=16)
    found = benchmark(server.grpc_url, "my-model", requests, [1, 2, 4], seconds=5,
                      repository="model_repository", metrics_url=server.metrics_url, source=source)
    trtis.bench.report.write(found, "reports", "my-model")
"""
from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from trtis.bench import ensembles, gpu_metrics, load, report as reports, statistics
from trtis.bench.baselines import alone_limit, in_process_levels, in_process_limit, naive_levels
from trtis.bench.in_process import InProcessModel, StepFunction
from trtis.bench.inputs import Request

log = logging.getLogger(__name__)
BASELINE_KEYS = ("in_process", "in_process_levels", "naive", "network_limit", "network_device", "network_model")


def this_machine() -> str:
    """How reports name the machine unless told: architecture and cores."""
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def measure_served(url: str, model: str, requests: Sequence[Request], levels: Sequence[int], seconds: float,
                   warmup: float, clients: int = 1, metrics_url: str | None = None,
                   headers: Mapping[str, str] | None = None, progress: bool = True) -> dict:
    """The served model at each concurrency level, with the settings and GPU memory at rest;
    ``headers`` go with every call (the keys of a server that restricts its APIs)."""
    configs = ensembles.served_configs(url, model, headers)
    models = ensembles.composing_models(configs, model)
    found: dict = {"model": model, "settings": statistics.settings(configs, models), "gpu_memory_at_rest_mib": {}}
    if metrics_url:
        try:
            found["gpu_memory_at_rest_mib"] = {str(g["gpu"]): g["memory_used_mib"] for g in gpu_metrics.read_settled(metrics_url)}
        except gpu_metrics.MetricsUnavailable as error:
            log.warning("%s; the report has no GPU figures (give the server's metrics URL to get them)", error)
            found["gpu_metrics_error"], metrics_url = str(error), None
    found["served"] = [load.measure(url, model, requests, level, seconds, warmup, models, clients, metrics_url, headers)
                       for level in tqdm(levels, desc="served", unit="level", disable=not progress)]
    return found


def measure_baselines(repository: Path | str, model: str, requests: Sequence[Request], levels: Sequence[int],
                      seconds: float, warmup: float, overrides: Mapping[str, StepFunction] | None = None,
                      alone: str | None = None, batches: Sequence[int] | None = None, naive: bool = True,
                      naive_port: int = 0, naive_concurrency: int = 16, clients: int = 1,
                      progress: bool = True) -> dict:
    """The model in process (best of ``batches``, and with as many requests in flight as ``clients``
    clients keep at each of ``levels``), ``alone`` (one composing model) per batch size, and the
    naive server at the levels up to ``naive_concurrency``, all on ``requests``. ``batches``
    defaults to 1 and 8 where ``alone`` runs on the CPU, 1 to 64 where it runs on a GPU (1 for a
    model without a batch axis)."""
    with InProcessModel(repository, model, overrides) as runner:
        device = runner.devices[alone or runner.models[0]]
        if batches is None:
            batches = [1] if runner.configs[model].max_batch_size == 0 else \
                [1, 8] if device == "cpu" else [1, 8, 16, 32, 64]
        found = {"in_process": in_process_limit(runner, requests, batches, seconds),
                 "in_process_levels": in_process_levels(
                     runner, requests, [level * clients for level in levels], seconds, warmup,
                     lambda items: tqdm(items, desc="in process", unit="level", disable=not progress)),
                 "network_limit": alone_limit(runner, alone, requests, batches, seconds) if alone else [],
                 "network_device": device, "network_model": alone, "naive": []}
    chosen = [level for level in levels if level <= naive_concurrency]
    if naive and chosen:
        found["naive"] = naive_levels(repository, model, requests, chosen, seconds, warmup, overrides, naive_port,
                                      lambda items: tqdm(items, desc="naive server", unit="level", disable=not progress))
    return found


def benchmark(url: str, model: str, requests: Sequence[Request], levels: Sequence[int], *, seconds: float = 20,
              warmup: float = 5, clients: int = 1, metrics_url: str | None = None,
              headers: Mapping[str, str] | None = None, repository: Path | str | None = None,
              overrides: Mapping[str, StepFunction] | None = None, alone: str | None = None, batches: Sequence[int] | None = None, naive: bool = True,
              naive_port: int = 0, naive_concurrency: int = 16, baselines_from: Mapping | None = None,
              device: str | None = None, source: str = "", subject: str | None = None,
              columns: Sequence[reports.Column] | None = None, reproduce: str | None = None,
              progress: bool = True) -> dict:
    """The whole report: the served levels, then the baselines (measured from ``repository``, taken
    from an earlier report's ``baselines_from``, or none), titled for ``device``. ``headers`` carry
    the keys of a server that restricts its APIs (``server.admin_headers``)."""
    device = device or this_machine()
    found = measure_served(url, model, requests, levels, seconds, warmup, clients, metrics_url, headers, progress)
    report = {"device": device, "date": time.strftime("%Y-%m-%d"), **found,
              "in_process": {"throughput": float("nan"), "batch": None}, "in_process_levels": [], "naive": [],
              "network_limit": [], "network_device": "cpu", "network_model": alone}
    if baselines_from is not None:
        report.update({key: baselines_from[key] for key in BASELINE_KEYS if key in baselines_from})
    elif repository is not None:
        report.update(measure_baselines(repository, model, requests, levels, seconds, warmup, overrides, alone,
                                        batches, naive, naive_port, naive_concurrency, clients, progress))
    who = f"{clients} client processes, each" if clients > 1 else "one client"
    report["title"] = (f"{subject or f'Model {model}'}, {device}, {report['date']}; {who} with the concurrency shown "
                       f"(trt_client, gRPC); {seconds:g} s per level after {warmup:g} s warm-up"
                       + (f", {source} round-robin." if source else "."))
    report["columns"] = [list(c) for c in columns] if columns else None
    report["reproduce"] = reproduce
    return report
