"""Benchmarking and tuning any model of any repository served by Triton.

- ``inputs``: requests from files (a BYTES input) or random tensors of the config's shape and type
- ``load``: the load generator (concurrency levels, client processes) with Triton's statistics
- ``statistics``, ``gpu_metrics``: Triton's per-model statistics; GPU figures from its metrics endpoint
- ``in_process``, ``baselines``: the repository's models run in process through ``trtis.runtimes``,
  a model alone per batch size, and a naive Flask server (``naive_server``, a process of its own)
- ``plan``: what a measurement is asked to do (``Target``, ``Load``, ``Baselines``, ``Titles``)
- ``measurement``, ``report``: the whole measurement and its JSON/Markdown/PNG report
- ``tune``: the sweep of instance counts, max batch and queue delay, and the choice over levels
- ``cli``: ``python -m trtis.bench`` and the options the example's bench.sh/tune.sh share
"""
from trtis.bench.measurement import benchmark
from trtis.bench.plan import Baselines, Load, Target, Titles
from trtis.bench.in_process import InProcessModel
from trtis.bench.inputs import file_requests, files_under, model_inputs, random_requests, requests_for

__all__ = ["Baselines", "InProcessModel", "Load", "Target", "Titles", "benchmark", "file_requests", "files_under",
           "model_inputs", "random_requests", "requests_for"]
