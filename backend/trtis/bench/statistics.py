"""Triton's own per-model statistics over a measured window, and the served settings, read from
the server: where a request's time went (queue, compute input/infer/output) and how well the
dynamic batcher batched, for each model that does the work."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from tritonclient.grpc import model_config_pb2 as pb

from trtis.config import ModelConfig

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def read(url: str, models: Sequence[str], headers: Mapping[str, str] | None = None) -> dict[str, dict]:
    """The cumulative statistics of ``models`` (JSON form of ``get_inference_statistics``);
    ``headers`` carry the admin key of a server that restricts its statistics."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(url) as server:
        try:
            stats = server.get_inference_statistics(as_json=True, headers=headers)["model_stats"]
        except InferenceServerException as error:
            raise PermissionError(f"cannot read Triton's statistics at {url} ({error.message()}): a server that "
                                  "restricts them needs its admin key in the headers (bench.sh --admin-key-file; "
                                  "headers=server.admin_headers in Python)") from None
    return {s["name"]: s for s in stats if s["name"] in models}


def _count(stats: Mapping, *keys: str) -> int:
    for key in keys:
        stats = stats.get(key, {})
    return int(stats or 0)


def delta(before: Mapping[str, dict], after: Mapping[str, dict], models: Sequence[str]) -> dict[str, dict]:
    """Per model between two readings: requests, executions, the average batch, and the average
    milliseconds per request in each phase (None where nothing ran)."""
    table = {}
    for name in models:
        a, b = after.get(name, {}), before.get(name, {})
        inferences = _count(a, "inference_count") - _count(b, "inference_count")
        executions = _count(a, "execution_count") - _count(b, "execution_count")
        row = {"inferences": inferences, "executions": executions,
               "average_batch": round(inferences / executions, 2) if executions else None}
        for phase in PHASES:
            count = _count(a, "inference_stats", phase, "count") - _count(b, "inference_stats", phase, "count")
            ns = _count(a, "inference_stats", phase, "ns") - _count(b, "inference_stats", phase, "ns")
            row[f"{phase}_ms"] = round(ns / count / 1e6, 2) if count else None
        table[name] = row
    return table


def settings(configs: Mapping[str, ModelConfig], models: Sequence[str]) -> str:
    """One line: each model's instance groups, max batch and dynamic-batching queue delay."""
    parts = []
    for name in models:
        config = configs[name]
        groups = ", ".join(f"{g.count or 1} x {pb.ModelInstanceGroup.Kind.Name(g.kind)[5:]}"
                           + (f" on GPUs {list(g.gpus)}" if g.gpus else "") for g in config.instance_group)
        delay = f", queue delay {config.dynamic_batching.max_queue_delay_microseconds} us" \
            if config.HasField("dynamic_batching") else ""
        parts.append(f"{name}: {groups or 'default instances'}, max batch {config.max_batch_size}{delay}")
    return "; ".join(parts)
