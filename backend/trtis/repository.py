"""Writing and validating a Triton model repository.

A repository is checked as a whole before anything is written (ensemble steps exist, tensors
connect with the same data types and dims, no cycles, nothing unused), and each model folder is
written beside its final place and renamed in, so a running server never sees half a model.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from trtis.config import DEFAULT_MODEL_FILENAME, ModelConfig, from_text, to_text

log = logging.getLogger(__name__)

Artefact = Path | bytes | None


class RepositoryError(ValueError):
    """A model repository that Triton would refuse or serve wrongly."""


@dataclass
class Model:
    """A model to write: its config, its file (or folder) and extra files such as labels
    (keyed by their path inside the model folder)."""

    config: ModelConfig
    artefact: Artefact = None
    version: int = 1
    files: Mapping[str, Path | bytes] = field(default_factory=dict)


def _dtype(value: int) -> str:
    return pb.DataType.Name(value)


def _dims_agree(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


def _check_ensemble(config: ModelConfig, models: Mapping[str, ModelConfig]) -> None:
    name = config.name
    steps = config.ensemble_scheduling.step
    if not steps:
        raise RepositoryError(f"ensemble {name!r} has no steps")
    ensemble_inputs = {t.name: t for t in config.input}
    ensemble_outputs = {t.name: t for t in config.output}
    producers: dict[str, tuple[int, pb.ModelOutput]] = {}
    consumers: dict[str, list[tuple[int, pb.ModelInput]]] = {}
    for index, step in enumerate(steps):
        model = models.get(step.model_name)
        if model is None:
            raise RepositoryError(f"ensemble {name!r} step {index}: model {step.model_name!r} is not in the repository")
        if config.max_batch_size > model.max_batch_size:
            raise RepositoryError(
                f"ensemble {name!r}: max_batch_size {config.max_batch_size} exceeds "
                f"{model.max_batch_size} of step model {model.name!r}")
        model_inputs = {t.name: t for t in model.input}
        model_outputs = {t.name: t for t in model.output}
        for tensor, ensemble_tensor in step.input_map.items():
            if tensor not in model_inputs:
                raise RepositoryError(f"ensemble {name!r}: model {model.name!r} has no input {tensor!r}")
            consumers.setdefault(ensemble_tensor, []).append((index, model_inputs[tensor]))
        for tensor in model_inputs.keys() - step.input_map.keys():
            if not model_inputs[tensor].optional:
                raise RepositoryError(f"ensemble {name!r}: input {tensor!r} of model {model.name!r} is not mapped")
        for tensor, ensemble_tensor in step.output_map.items():
            if tensor not in model_outputs:
                raise RepositoryError(f"ensemble {name!r}: model {model.name!r} has no output {tensor!r}")
            if ensemble_tensor in producers or ensemble_tensor in ensemble_inputs:
                raise RepositoryError(f"ensemble {name!r}: tensor {ensemble_tensor!r} is produced twice")
            producers[ensemble_tensor] = (index, model_outputs[tensor])

    _check_acyclic(name, steps, producers)
    for tensor, uses in consumers.items():
        if tensor in ensemble_inputs:
            source, source_model = ensemble_inputs[tensor], "the ensemble input"
        elif tensor in producers:
            source, source_model = producers[tensor][1], f"model {steps[producers[tensor][0]].model_name!r}"
        else:
            raise RepositoryError(f"ensemble {name!r}: tensor {tensor!r} is consumed but produced by no step")
        for index, target in uses:
            where = f"ensemble {name!r}: tensor {tensor!r} from {source_model} into model {steps[index].model_name!r}"
            if source.data_type != target.data_type:
                raise RepositoryError(f"{where}: data type {_dtype(source.data_type)} != {_dtype(target.data_type)}")
            if not _dims_agree(source.dims, target.dims):
                raise RepositoryError(f"{where}: dims {list(source.dims)} != {list(target.dims)}")
    for tensor in ensemble_inputs.keys() - consumers.keys():
        raise RepositoryError(f"ensemble {name!r}: input {tensor!r} is used by no step")
    for tensor, output in ensemble_outputs.items():
        if tensor not in producers:
            raise RepositoryError(f"ensemble {name!r}: output {tensor!r} is produced by no step")
        source = producers[tensor][1]
        if source.data_type != output.data_type or not _dims_agree(source.dims, output.dims):
            raise RepositoryError(
                f"ensemble {name!r}: output {tensor!r} is declared {_dtype(output.data_type)} {list(output.dims)} "
                f"but produced as {_dtype(source.data_type)} {list(source.dims)}")
    for tensor in producers.keys() - consumers.keys() - ensemble_outputs.keys():
        raise RepositoryError(f"ensemble {name!r}: tensor {tensor!r} is produced but never used")


def _check_acyclic(name: str, steps: Sequence[pb.ModelEnsembling.Step], producers: Mapping[str, tuple[int, object]]) -> None:
    depends = {i: {producers[t][0] for t in step.input_map.values() if t in producers} for i, step in enumerate(steps)}
    done: set[int] = set()
    while len(done) < len(steps):
        ready = [i for i in depends if i not in done and depends[i] <= done]
        if not ready:
            cycle = sorted(steps[i].model_name for i in depends if i not in done)
            raise RepositoryError(f"ensemble {name!r}: steps form a cycle through models {cycle}")
        done.update(ready)


def validate(configs: Iterable[ModelConfig]) -> None:
    """Raise ``RepositoryError`` naming the model and tensor at fault, if Triton would refuse these."""
    models: dict[str, ModelConfig] = {}
    for config in configs:
        if not config.name:
            raise RepositoryError("a model has no name")
        if config.name in models:
            raise RepositoryError(f"model {config.name!r} appears twice")
        if not (config.platform or config.backend):
            raise RepositoryError(f"model {config.name!r} names neither a platform nor a backend")
        for kind, tensors in (("input", config.input), ("output", config.output)):
            names = [t.name for t in tensors]
            if not names:
                raise RepositoryError(f"model {config.name!r} has no {kind}s")
            if len(set(names)) != len(names):
                raise RepositoryError(f"model {config.name!r} has a repeated {kind} name among {names}")
        over = [n for n in config.dynamic_batching.preferred_batch_size if n > config.max_batch_size]
        if over:
            raise RepositoryError(f"model {config.name!r}: preferred batch sizes {over} exceed its max_batch_size "
                                  f"{config.max_batch_size}")
        models[config.name] = config
    for config in models.values():
        if config.platform == "ensemble":
            _check_ensemble(config, models)


def read_configs(root: Path) -> dict[str, ModelConfig]:
    """The configs of the models already in a repository folder."""
    configs = {}
    for path in sorted(Path(root).glob("*/config.pbtxt")):
        config = from_text(path.read_text())
        configs[config.name or path.parent.name] = config
    return configs


def _put(destination: Path, source: Path | bytes) -> None:
    if isinstance(source, bytes):
        destination.write_bytes(source)
    elif Path(source).is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copyfile(source, destination)


def _write_model(root: Path, model: Model) -> Path:
    config = model.config
    final = root / config.name
    staging = Path(tempfile.mkdtemp(prefix=f".{config.name}.", dir=root))
    try:
        version_dir = staging / str(model.version)
        version_dir.mkdir()
        if model.artefact is not None:
            kind = config.platform or config.backend
            filename = config.default_model_filename or DEFAULT_MODEL_FILENAME.get(kind)
            if filename is None:
                raise RepositoryError(f"model {config.name!r}: no default file name for {kind!r}; "
                                      "set default_model_filename")
            _put(version_dir / filename, model.artefact)
        for filename, source in model.files.items():  # paths inside the model folder ("1/helper.py")
            (staging / filename).parent.mkdir(parents=True, exist_ok=True)
            _put(staging / filename, source)
        (staging / "config.pbtxt").write_text(to_text(config))
        os.chmod(staging, 0o755)
        if final.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{config.name}.old.", dir=root))
            final.rename(retired / config.name)
            staging.rename(final)
            shutil.rmtree(retired)
        else:
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return final


def write_repository(root: Path, models: Sequence[Model]) -> list[Path]:
    """Validate ``models`` together with what ``root`` already holds, then write them.

    Models already in ``root`` that are not being replaced stay and take part in the check,
    so an ensemble can be rewritten alone once its steps are there.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    configs = read_configs(root)
    configs.update({m.config.name: m.config for m in models})
    validate(configs.values())
    written = []
    for model in models:
        written.append(_write_model(root, model))
        log.info("Wrote model %r to %s", model.config.name, written[-1])
    return written
