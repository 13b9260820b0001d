"""CenterNet on DLA-34: the backbone, the DLA-up aggregation back to stride 4, and the heads.

Module names follow the official ``DLASeg`` (``base``, ``dla_up.ida_0.proj_1``...,
``hm``/``wh``/``reg``). ``forward`` returns the tuple ``(hm, wh, reg)`` in that fixed order
(a dict cannot be exported to ONNX, and a swapped order would silently give wrong boxes);
``hm`` is the heatmap's logits: the postprocess applies the sigmoid.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from detection.network.dla import DLA34, conv_bn_relu, init_conv_bn_
from detection.pipeline import HEADS


def bilinear_upsampling_(up: nn.ConvTranspose2d) -> None:
    """Initialise a depthwise transposed convolution as bilinear upsampling (as the official code)."""
    weight = up.weight.data
    f = math.ceil(weight.size(2) / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    for i in range(weight.size(2)):
        for j in range(weight.size(3)):
            weight[0, 0, i, j] = (1 - math.fabs(i / f - c)) * (1 - math.fabs(j / f - c))
    weight[1:, 0] = weight[0, 0]


class IDAUp(nn.Module):
    """Iterative deep aggregation: project each input to ``out_dim``, upsample it to the first
    one's resolution, and merge them one after another with 3x3 "node" convolutions."""

    def __init__(self, out_dim: int, channels: list[int], up_factors: list[int]):
        super().__init__()
        for i, (c, f) in enumerate(zip(channels, up_factors)):
            proj = nn.Identity() if c == out_dim else nn.Sequential(*conv_bn_relu(c, out_dim, kernel=1))
            if f == 1:
                up = nn.Identity()
            else:
                up = nn.ConvTranspose2d(out_dim, out_dim, f * 2, stride=f, padding=f // 2, output_padding=0,
                                        groups=out_dim, bias=False)
                bilinear_upsampling_(up)
            setattr(self, f"proj_{i}", proj)
            setattr(self, f"up_{i}", up)
        for i in range(1, len(channels)):
            setattr(self, f"node_{i}", nn.Sequential(*conv_bn_relu(out_dim * 2, out_dim, kernel=3)))
        self.count = len(channels)
        init_conv_bn_(self)

    def forward(self, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        layers = [getattr(self, f"up_{i}")(getattr(self, f"proj_{i}")(layer)) for i, layer in enumerate(layers)]
        x, merged = layers[0], []
        for i in range(1, self.count):
            x = getattr(self, f"node_{i}")(torch.cat([x, layers[i]], 1))
            merged.append(x)
        return merged


class DLAUp(nn.Module):
    """Aggregates levels 2-5 (strides 4-32) back to stride 4, deepest first."""

    def __init__(self, channels: list[int]):
        super().__init__()
        in_channels, scales = list(channels), [2 ** i for i in range(len(channels))]
        for i in range(len(channels) - 1):
            j = -i - 2
            setattr(self, f"ida_{i}", IDAUp(channels[j], in_channels[j:], [s // scales[j] for s in scales[j:]]))
            scales[j + 1:] = [scales[j]] * len(scales[j + 1:])
            in_channels[j + 1:] = [channels[j]] * len(in_channels[j + 1:])
        self.count = len(channels)

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        layers = list(layers)
        for i in range(self.count - 1):
            merged = getattr(self, f"ida_{i}")(layers[-i - 2:])
            layers[-i - 1:] = merged
        return layers[-1]


class InFloat32(nn.Module):
    """A layer of an FP16 network run in FP32: its input cast up, its output left in FP32."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float())


class CenterNet(nn.Module):
    FIRST_LEVEL = 2  # output stride 4

    def __init__(self, num_classes: int, head_conv: int = 256):
        super().__init__()
        self.num_classes = num_classes
        self.base = DLA34()
        channels = list(self.base.channels[self.FIRST_LEVEL:])
        self.dla_up = DLAUp(channels)
        for head, outputs in zip(HEADS, (num_classes, 2, 2)):
            layers = nn.Sequential(nn.Conv2d(channels[0], head_conv, 3, padding=1, bias=True), nn.ReLU(inplace=True),
                                   nn.Conv2d(head_conv, outputs, 1, stride=1, padding=0, bias=True))
            if head == "hm":
                layers[-1].bias.data.fill_(-2.19)
            else:
                for conv in (layers[0], layers[2]):
                    nn.init.normal_(conv.weight, std=0.001)
                    nn.init.constant_(conv.bias, 0)
            setattr(self, head, layers)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.dla_up(self.base(image)[self.FIRST_LEVEL:])
        return self.hm(features), self.wh(features), self.reg(features)

    def half(self) -> "CenterNet":
        """The FP16 form the PyTorch-based GPU formats serve (compiled, FP16 TorchScript; TensorRT builds
        from ONNX): FP16 but for each head's last 1x1 convolution, whose weights stay as they were and
        which accumulates and outputs in FP32 (cuDNN may still use TF32 inside), so the heads leave the
        network in FP32. Measured on an H100 (docs/performance/gpu.md, "The FP16 form"): in FP16
        throughout the network scored 0.13 points of mAP@[.5:.95] below FP32 on the test split, in
        process; in this form, the same as FP32. Only ``half()`` on the CenterNet itself makes this form
        (``nn.Module.half`` of a wrapper, or ``.to(torch.float16)``, does not), and its state dict names
        those layers ``hm.2.layer.weight``...: it is a form to export, not to save as a checkpoint."""
        kept = {}
        for name in HEADS:  # out of the module while it turns FP16, so their weights are not rounded
            layers = getattr(self, name)
            kept[name] = layers[-1] if isinstance(layers[-1], InFloat32) else InFloat32(layers[-1])
            layers[-1] = nn.Identity()
        super().half()
        for name, last in kept.items():
            getattr(self, name)[-1] = last
        return self
