"""A repository's model run in this process, with the runtimes its backends serve it with.

The in-process baselines need the served computation without the server: one model through
``trtis.runtimes.load``, or an ensemble whose steps run in dependency order, each fed by its
``input_map`` and named by its ``output_map``, as Triton's ensemble scheduler does. A step whose
backend has no in-process runtime (a ``python`` backend model, for example) is given by the caller
as an override: a callable from its input arrays to its output arrays, keyed by input and output
names of that model.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from trtis import repository, runtimes
from trtis.bench.ensembles import composing_models
from trtis.config import PREPARE, ModelConfig

Arrays = dict[str, np.ndarray]
StepFunction = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def device_of(config: ModelConfig) -> str:
    """``cuda:0`` for a model whose instance group is on GPUs where PyTorch sees one, else ``cpu``."""
    on_gpu = any(group.kind == group.KIND_GPU for group in config.instance_group)
    if on_gpu and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "cuda:0"
    return "cpu"


class InProcessModel:
    """Model ``name`` of the repository at ``root``, callable on a feed of its inputs.

    ``steps`` holds one callable per composing model (the loaded runtime or the override), so a
    single step can be measured alone on the inputs the chain gave it (``step_feeds``).
    ``devices`` says where each composing model runs.
    """

    def __init__(self, root: Path | str, name: str, overrides: Mapping[str, StepFunction] | None = None):
        self.root, self.name = Path(root), name
        self.configs = repository.read_configs(self.root)
        self.models = composing_models(self.configs, name)
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.models))
        if unknown:
            raise ValueError(f"overrides for {unknown}, which {name!r} does not run (it runs {self.models})")
        self.devices = {model: device_of(self.configs[model]) for model in self.models}
        self._runtimes: list[runtimes.Runtime] = []
        self.steps: dict[str, StepFunction] = {}
        try:
            for model in self.models:
                self.steps[model] = overrides[model] if model in overrides else self._load(model)
        except BaseException:
            self.close()
            raise

    def _load(self, model: str) -> StepFunction:
        config = self.configs[model]
        if runtimes.backend_of(config) not in runtimes.RUNTIMES:
            raise ValueError(f"model {model!r} runs on backend {runtimes.backend_of(config)!r}, which has no "
                             f"in-process runtime (there are: {', '.join(runtimes.RUNTIMES)}); pass "
                             f"overrides={{{model!r}: function}} giving its outputs from its inputs")
        folder = self.root / model
        versions = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
        version = max(versions, default=1)
        runtime = runtimes.load(folder, config, self.devices[model], version=version)
        self._runtimes.append(runtime)
        parameters = {key: value.string_value for key, value in config.parameters.items()}
        if not parameters.get(PREPARE):
            return runtime.run
        device = self.devices[model]
        prepare = runtimes.prepare_step(folder / str(version), parameters[PREPARE], device, parameters)

        def prepared(feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
            (inputs,) = prepare([feed])  # as the served model runs its prepare step
            if isinstance(inputs, Exception):
                raise inputs
            return runtime.run(runtimes.typed(inputs, runtime.inputs))
        return prepared

    def step_feeds(self, feed: Mapping[str, np.ndarray]) -> dict[str, Arrays]:
        """Run the model on ``feed``; each composing model's own input feed, by model name."""
        feeds: dict[str, Arrays] = {}
        self._run(self.name, feed, feeds)
        return feeds

    def __call__(self, feed: Mapping[str, np.ndarray]) -> Arrays:
        """The model's outputs for ``feed`` (arrays keyed by its input names, batch axis first)."""
        return self._run(self.name, feed, {})

    def _run(self, name: str, feed: Mapping[str, np.ndarray], feeds: dict[str, Arrays]) -> Arrays:
        config = self.configs[name]
        missing = [t.name for t in config.input if t.name not in feed]
        if missing:
            raise ValueError(f"model {name!r} needs inputs {missing} (it takes "
                             f"{[t.name for t in config.input]}, got {sorted(feed)})")
        if config.platform != "ensemble":
            feeds[name] = {t.name: np.asarray(feed[t.name]) for t in config.input}
            outputs = self.steps[name](feeds[name])
            return {t.name: np.asarray(outputs[t.name]) for t in config.output}
        tensors = dict(feed)
        pending = list(config.ensemble_scheduling.step)
        while pending:
            ready = [step for step in pending if all(source in tensors for source in step.input_map.values())]
            if not ready:
                waiting = {step.model_name: sorted(set(step.input_map.values()) - tensors.keys()) for step in pending}
                raise ValueError(f"ensemble {name!r}: no step can run, tensors never produced: {waiting}")
            for step in ready:
                outputs = self._run(step.model_name, {own: tensors[source] for own, source in step.input_map.items()},
                                    feeds)
                tensors.update({target: outputs[own] for own, target in step.output_map.items()})
                pending.remove(step)
        return {t.name: tensors[t.name] for t in config.output}

    def close(self) -> None:
        """Release the runtimes (sessions, device memory)."""
        for runtime in self._runtimes:
            runtime.close()
        self._runtimes.clear()

    def __enter__(self) -> InProcessModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
