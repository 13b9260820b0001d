"""Whether a model has hung: Triton's own per-model counters at its metrics endpoint, read by the
supervisor. Standard library only, so it runs in the official image's Python."""
from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

METRICS_EVERY_S = 2.0  # how often Triton's counters are read for a hang (a read may take a moment)

# Triton's per-model counters at /metrics: what waits, and what has finished.
_COUNTER = re.compile(r'^nv_inference_(pending_request_count|exec_count|request_success|request_failure)'
                      r'\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)
_MODEL = re.compile(r'model="(?P<model>[^"]*)",?.*version="(?P<version>[^"]*)"')


class Progress:
    """Whether a model has had requests waiting for ``timeout`` seconds while none of its requests
    finished (ok or not): a backend process alive but deadlocked. A busy model finishes requests."""

    def __init__(self, metrics_url: str, timeout: float):
        self.metrics_url, self.timeout, self.read_at = metrics_url, timeout, float("-inf")
        self.waiting_since: dict[str, tuple[float, tuple]] = {}

    def counters(self) -> dict[str, dict[str, float]] | None:
        """Each model version's counters, summed over its labels; None when the endpoint does not answer."""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as response:
                text = response.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return None
        by_model: dict[str, dict[str, float]] = {}
        for line in _COUNTER.finditer(text):
            model = _MODEL.search(line["labels"])
            if model:
                counters = by_model.setdefault(f"{model['model']} version {model['version']}", {})
                counters[line[1]] = counters.get(line[1], 0.0) + float(line["value"])
        return by_model

    def hung(self) -> str | None:
        """Which model hangs and for how long, or None (also between two reads of the counters)."""
        now = time.monotonic()
        if now - self.read_at < METRICS_EVERY_S:
            return None
        self.read_at, counters = now, self.counters()
        if counters is None:
            return None  # the metrics port not answering is no sign of a hung model
        for model, values in counters.items():
            finished = (values.get("exec_count"), values.get("request_success"), values.get("request_failure"))
            if values.get("pending_request_count", 0) <= 0:
                self.waiting_since.pop(model, None)
                continue
            since, seen = self.waiting_since.get(model, (now, finished))
            if seen != finished:
                since = now
            self.waiting_since[model] = (since, finished)
            if now - since >= self.timeout:
                return (f"model {model} has had requests waiting for {now - since:.0f} s and finished none "
                        "(a backend process of it hangs)")
        return None
