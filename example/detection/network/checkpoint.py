"""Loading and saving CenterNet weights in the official checkpoint format.

Official checkpoints are ``{'epoch': int, 'state_dict': {...}}`` (``module.`` prefixes when
trained with DataParallel). Next to the weights, ``<name>.json`` says what the weights are for:
``{"arch": "dlav0_34", "head_conv": 256, "class_names": [...]}``; the number of classes is
the length of ``class_names``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from detection.network.centernet import CenterNet

log = logging.getLogger(__name__)
ARCH = "dlav0_34"
# The example's trained weights, shipped in the repository.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "centernet_dlav0_34.pth"


class CheckpointMismatch(ValueError):
    """A checkpoint whose keys or shapes do not fit the network."""


@dataclass
class NetworkSpec:
    class_names: list[str]
    arch: str = ARCH
    head_conv: int = 256
    extra: dict = field(default_factory=dict)

    @staticmethod
    def path_for(checkpoint: Path) -> Path:
        return Path(checkpoint).with_suffix(".json")

    @classmethod
    def read(cls, checkpoint: Path) -> NetworkSpec:
        path = cls.path_for(checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: it names the classes of {checkpoint} "
                                    '({"arch": "dlav0_34", "class_names": ["person", ...]})')
        data = json.loads(path.read_text())
        if data.get("arch", ARCH) != ARCH:
            raise ValueError(f"{path}: arch {data['arch']!r} is not supported; this example builds {ARCH}")
        known = {k: data.pop(k) for k in ("class_names", "arch", "head_conv") if k in data}
        return cls(**known, extra=data)

    def write(self, checkpoint: Path) -> None:
        data = asdict(self)
        data.update(data.pop("extra"))
        self.path_for(checkpoint).write_text(json.dumps(data, indent=2) + "\n")


def _state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatch(f"{checkpoint} holds no state_dict (expected {{'epoch', 'state_dict'}})")
    return {key.removeprefix("module."): value for key, value in state.items()}


def check_state_dict(network: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise naming every missing, unexpected and mis-shaped key."""
    expected = network.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    misshaped = sorted(f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
                       for key in expected.keys() & state.keys() if state[key].shape != expected[key].shape)
    if missing or unexpected or misshaped:
        problems = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
                    if keys]
        raise CheckpointMismatch(f"{source} does not fit CenterNet-{ARCH}: " + "; ".join(problems))


def load_network(checkpoint: Path | None = None, spec: NetworkSpec | None = None, seed: int = 0) -> tuple[CenterNet, NetworkSpec]:
    """The network in eval mode with the checkpoint's weights, or seeded random weights when
    ``checkpoint`` is None (``spec`` then names the classes)."""
    if checkpoint is None:
        if spec is None:
            raise ValueError("random weights need a NetworkSpec naming the classes")
        return random_network(spec, seed), spec
    spec = spec or NetworkSpec.read(checkpoint)
    network = CenterNet(len(spec.class_names), spec.head_conv)
    state = _state_dict(Path(checkpoint))
    check_state_dict(network, state, str(checkpoint))
    network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    log.info("Loaded %s (%d classes)", checkpoint, len(spec.class_names))
    return network.eval(), spec


@torch.no_grad()
def random_network(spec: NetworkSpec, seed: int) -> CenterNet:
    """Seeded random weights, with batch-norm statistics measured on seeded noise: left at their
    initial values, activations grow layer after layer and the heatmap saturates at 1.0."""
    torch.manual_seed(seed)
    network = CenterNet(len(spec.class_names), spec.head_conv)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over the calibration batches
    network.train()
    for _ in range(2):
        network(torch.randn(2, 3, 128, 128))
    return network.eval()


def save_checkpoint(network: CenterNet, spec: NetworkSpec, path: Path, epoch: int, half: bool = False, **extra) -> None:
    """Write the official format (and the class-names file beside it); ``half`` stores FP16 weights."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in network.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "state_dict": state, **extra}, path)
    spec.write(path)
