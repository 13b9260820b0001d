"""CenterNet with a DLA-34 backbone and no deformable convolution (official ``--arch dlav0_34``)."""
from detection.network.centernet import CenterNet
from detection.network.checkpoint import CheckpointMismatch, NetworkSpec, load_network, save_checkpoint

__all__ = ["CenterNet", "CheckpointMismatch", "NetworkSpec", "load_network", "save_checkpoint"]
