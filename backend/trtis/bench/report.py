"""The benchmark's report: JSON (every figure), a Markdown table and a PNG plot.

The JSON keeps the fields bench.sh has always written, so earlier reports stay readable:
``device``, ``date``, ``title``, ``settings``, ``served`` (one row per concurrency level, with
``triton`` statistics per model and ``gpus``), ``in_process``, ``network_limit`` (the batch sweep
of one composing model alone), ``network_device``, ``naive``, ``gpu_memory_at_rest_mib``.
Newer reports add ``model``, ``network_model``, ``columns``, ``reproduce`` and ``in_process_levels``
(the model in process with as many requests in flight as each served level, one thread each).
"""
from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

# Columns of Triton statistics in the table: (heading, model, field of its statistics).
Column = tuple[str, str, str]


def default_columns(models: Sequence[str]) -> list[Column]:
    """Each model's average batch, queue time and compute time."""
    return [column for model in models for column in ((f"{model} batch", model, "average_batch"),
                                                      (f"{model} queue ms", model, "queue_ms"),
                                                      (f"{model} infer ms", model, "compute_infer_ms"))]


def limit_of(report: dict) -> tuple[float, str]:
    """What the server should approach: the model measured alone where it runs on a GPU (the other
    models then run on other processors beside it), else the whole model in process."""
    if report.get("network_limit") and report.get("network_device", "cpu") != "cpu":
        best = max(report["network_limit"], key=lambda row: row["throughput"])
        return best["throughput"], f"{report.get('network_model', 'network')} only, batch {best['batch']}"
    if report["in_process"]["batch"] is None:
        return float("nan"), "not measured"
    return report["in_process"]["throughput"], f"in process, batch {report['in_process']['batch']}"


def in_process_at(report: dict) -> dict[int, dict]:
    """The in-process rows by requests in flight (a served level's concurrency times its clients)."""
    return {row["concurrency"]: row for row in report.get("in_process_levels", [])}


def _in_flight(row: dict) -> int:
    return row["concurrency"] * row.get("clients", 1)


def _gpus(report: dict) -> str:
    """A line where the table's GPU columns are empty, saying why."""
    if report.get("gpu_metrics_error"):
        return f"GPU utilisation and memory: not read ({report['gpu_metrics_error']})."
    if any(row.get("gpus") for row in report["served"]) or report.get("gpu_memory_at_rest_mib"):
        return ""
    return "GPU utilisation and memory: none (Triton's metrics endpoint reports no GPU)."


def markdown(report: dict) -> str:
    limit, limit_name = limit_of(report)
    first = report["served"][0]["triton"] if report["served"] else {}
    columns = [tuple(c) for c in report.get("columns") or default_columns(list(first))]
    lines = [report["title"], "", f"Settings: {report['settings']}", ""]
    if report["in_process"]["batch"] is not None:
        lines.append(f"In process (no server, {report['network_device']}, best batch {report['in_process']['batch']}): "
                     f"**{report['in_process']['throughput']} requests/s**.")
    if report.get("in_process_levels"):
        lines.append("In process at each level: as many threads as requests in flight, each running one request "
                     "at a time through the same runtimes (no server).")
    if report.get("network_limit"):
        lines.append(f"{report.get('network_model', 'Network')} alone (host memory in and out), items/s by batch: "
                     + ", ".join(f"{row['batch']}: {row['throughput']}" for row in report["network_limit"]) + ".")
    if report.get("gpu_memory_at_rest_mib"):
        lines.append(f"GPU memory in use with the models loaded, before any request: "
                     f"{', '.join(f'GPU {g}: {m:.0f} MiB' for g, m in report['gpu_memory_at_rest_mib'].items())}.")
    if _gpus(report):
        lines.append(_gpus(report))
    headings = ["concurrency", "Triton req/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "errors",
                f"vs limit ({limit_name})", "in process req/s", "vs in process", "naive req/s", "Triton / naive",
                *(c[0] for c in columns), "GPU util %", "GPU memory MiB"]
    lines += ["", "| " + " | ".join(headings) + " |", "| --- " * len(headings) + "|"]
    naive = {row["concurrency"]: row for row in report.get("naive", [])}
    in_process = in_process_at(report)
    for row in report["served"]:
        other = naive.get(row["concurrency"])
        local = in_process.get(_in_flight(row))
        gpus = row.get("gpus") or []
        cells = [row["concurrency"], row["throughput"], row["p50_ms"], row["p90_ms"], row["p95_ms"], row["p99_ms"],
                 row["errors"], f"{row['throughput'] / limit:.2f}x" if not math.isnan(limit) and limit else "-",
                 local["throughput"] if local else "-",
                 f"{row['throughput'] / local['throughput']:.2f}x" if local and local["throughput"] else "-",
                 other["throughput"] if other else "-",
                 f"{row['throughput'] / other['throughput']:.2f}x" if other and other["throughput"] else "-",
                 *(row["triton"].get(model, {}).get(field, "-") for _, model, field in columns),
                 " / ".join(f"{g['utilization_percent']:.0f}" for g in gpus) or "-",
                 " / ".join(f"{g['memory_used_mib']:.0f}" for g in gpus) or "-"]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    if report.get("reproduce"):
        lines += ["", f"Measure your own machine: `{report['reproduce']}`"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Throughput (served, in process, naive, the limit) and served latency percentiles by concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    served, naive, limit = report["served"], report.get("naive", []), limit_of(report)[0]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    levels = [row["concurrency"] for row in served]
    left.plot(levels, [row["throughput"] for row in served], "o-", label="Triton (trt_client, gRPC)")
    in_process = in_process_at(report)
    if all(_in_flight(row) in in_process for row in served) and in_process:
        left.plot(levels, [in_process[_in_flight(row)]["throughput"] for row in served], "^-.",
                  label="in process (same requests in flight)")
    if naive:
        left.plot([row["concurrency"] for row in naive], [row["throughput"] for row in naive], "s--",
                  label="naive server (Flask)")
    if not math.isnan(limit):
        left.axhline(limit, color="gray", linestyle=":", label="limit")
    left.set(xscale="log", xlabel="concurrency", ylabel="requests/s", title="throughput")
    left.legend()
    for p in (50, 90, 99):
        right.plot(levels, [row[f"p{p}_ms"] for row in served], "o-", label=f"p{p}")
    right.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="latency (Triton)")
    right.legend()
    for axes, ticks in ((left, sorted({*levels, *(row["concurrency"] for row in naive)})), (right, levels)):
        axes.set_xticks(ticks, [str(level) for level in ticks])
        axes.xaxis.set_minor_formatter(NullFormatter())
    figure.suptitle(textwrap.fill(report["title"], 130), fontsize=9)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(report: dict, output: Path, name: str) -> list[Path]:
    """``NAME.json``, ``NAME.md`` and ``NAME.png`` in ``output``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = [output / f"{name}.{suffix}" for suffix in ("json", "md", "png")]
    paths[0].write_text(json.dumps(report, indent=1) + "\n")
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    return paths
