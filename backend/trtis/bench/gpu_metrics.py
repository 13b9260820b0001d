"""GPU utilisation and memory from Triton's own metrics endpoint (``nv_gpu_utilization``,
``nv_gpu_memory_used_bytes``, ``nv_gpu_memory_total_bytes``), the figures of the GPUs the server
itself uses. A server without GPUs exports none of these series: the readings are then empty."""
from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

SERIES = {"nv_gpu_utilization": "utilization", "nv_gpu_memory_used_bytes": "used",
          "nv_gpu_memory_total_bytes": "total"}
MIB = 1024 * 1024


class MetricsUnavailable(RuntimeError):
    """The metrics endpoint did not answer."""


def read(metrics_url: str, timeout: float = 5) -> list[dict]:
    """One reading per GPU, in the server's order: index, uuid, utilisation in percent, memory in MiB."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
            text = response.read().decode()
    except OSError as error:
        raise MetricsUnavailable(f"cannot read Triton's metrics at {metrics_url}: {error}") from None
    gpus: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in SERIES and "gpu_uuid" in sample.labels:
                gpus.setdefault(sample.labels["gpu_uuid"], {})[SERIES[sample.name]] = sample.value
    return [{"gpu": index, "uuid": uuid, "utilization_percent": round(100 * values.get("utilization", 0.0), 1),
             "memory_used_mib": round(values.get("used", 0.0) / MIB), "memory_total_mib": round(values.get("total", 0.0) / MIB)}
            for index, (uuid, values) in enumerate(gpus.items())]


def read_settled(metrics_url: str, wait: float = 6.0) -> list[dict]:
    """``read``, waiting up to ``wait`` seconds for the first refresh: a server that has just started
    reports 0 MiB in use on every GPU until it first polls them (seen on two H100s), and a GPU the
    server uses never has 0 MiB in use."""
    deadline = time.monotonic() + wait
    readings = read(metrics_url)
    while readings and not any(g["memory_used_mib"] for g in readings) and time.monotonic() < deadline:
        time.sleep(0.5)
        readings = read(metrics_url)
    return readings


class GpuSampler:
    """Reads the metrics in the background between two wall-clock times; ``summary`` gives per GPU
    the mean utilisation and the most memory in use. Nothing is read when ``metrics_url`` is None.
    Triton refreshes these series every couple of seconds (``--metrics-interval-ms``, 2000 by default)."""

    def __init__(self, metrics_url: str | None, start: float, end: float, interval: float = 0.5):
        self.metrics_url, self.start, self.end, self.interval = metrics_url, start, end, interval
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            if self.start <= time.time() <= self.end:
                try:
                    self.samples += read(self.metrics_url)
                except MetricsUnavailable:
                    continue  # a reading missed under load; the others still count

    def __enter__(self) -> GpuSampler:
        if self.metrics_url is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> list[dict]:
        indexes = sorted({s["gpu"] for s in self.samples})
        return [{"gpu": g, "utilization_percent": round(float(np.mean([s["utilization_percent"] for s in mine])), 1),
                 "memory_used_mib": max(s["memory_used_mib"] for s in mine),
                 "memory_total_mib": max(s["memory_total_mib"] for s in mine)}
                for g in indexes for mine in [[s for s in self.samples if s["gpu"] == g]]]
