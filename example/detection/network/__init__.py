"""CenterNet with a DLA-34 backbone and no deformable convolution (official ``--arch dlav0_34``)."""
from detection.network.centernet import CenterNet
from detection.network.checkpoint import (DEFAULT_CHECKPOINT, CheckpointMismatch, NetworkSpec, load_network,
                                         save_checkpoint)

__all__ = ["CenterNet", "CheckpointMismatch", "DEFAULT_CHECKPOINT", "NetworkSpec", "load_network", "save_checkpoint"]
