"""Which models do the work of a served model: itself, or its ensemble's steps, read from the
configs (never from hard-coded names), so statistics, settings and baselines cover each of them."""
from __future__ import annotations

from collections.abc import Mapping

from trtis.config import ModelConfig


def composing_models(configs: Mapping[str, ModelConfig], name: str) -> list[str]:
    """``name`` itself, or its ensemble's step models in step order (nested ensembles unfolded)."""
    if name not in configs:
        raise ValueError(f"no model {name!r} (there are: {', '.join(sorted(configs)) or 'none'})")
    config = configs[name]
    if config.platform != "ensemble":
        return [name]
    found: list[str] = []
    for step in config.ensemble_scheduling.step:
        found += [model for model in composing_models(configs, step.model_name) if model not in found]
    return found


def served_configs(url: str, name: str, headers: Mapping[str, str] | None = None) -> dict[str, ModelConfig]:
    """The configs of ``name`` and of every model its ensemble runs, as the server at ``url`` (gRPC) has them."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    configs: dict[str, ModelConfig] = {}
    with grpcclient.InferenceServerClient(url) as server:
        pending = [name]
        while pending:
            model = pending.pop()
            if model in configs:
                continue
            try:
                configs[model] = server.get_model_config(model, headers=headers).config
            except InferenceServerException as error:
                raise ValueError(f"cannot read model {model!r} from the server at {url} ({error.message()}): "
                                 "is the server running (./start.sh) and serving that model?") from None
            pending += [step.model_name for step in configs[model].ensemble_scheduling.step]
    return configs
