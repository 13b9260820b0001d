"""DLA-34, the backbone of the official CenterNet ``dlav0_34``, with its module names, so that
official state_dicts load unchanged (``base.level3.tree1.root.conv.weight`` ...).

A Tree aggregates its two subtrees (and, at a level root, the downsampled input) through a
1x1 "root" convolution; levels 2-5 each halve the resolution.
"""
from __future__ import annotations

import math

import torch
from torch import nn

LEVELS = (1, 1, 1, 2, 2, 1)
CHANNELS = (16, 32, 64, 128, 256, 512)


def init_conv_bn_(module: nn.Module) -> None:
    """The official initialisation: convolutions N(0, sqrt(2 / fan-out)), batch norms 1 and 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_out = layer.kernel_size[0] * layer.kernel_size[1] * layer.out_channels
            layer.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        elif isinstance(layer, nn.BatchNorm2d):
            layer.weight.data.fill_(1)
            layer.bias.data.zero_()


def conv_bn_relu(inplanes: int, planes: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inplanes, planes, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        residual = x if residual is None else residual
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class Root(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(torch.cat(x, 1))))


class Tree(nn.Module):
    def __init__(self, levels: int, in_channels: int, out_channels: int, stride: int = 1,
                 level_root: bool = False, root_dim: int = 0):
        super().__init__()
        root_dim = root_dim or 2 * out_channels
        if level_root:
            root_dim += in_channels
        if levels == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride)
            self.tree2 = BasicBlock(out_channels, out_channels, 1)
            self.root = Root(root_dim, out_channels)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride)
            self.tree2 = Tree(levels - 1, out_channels, out_channels, root_dim=root_dim + out_channels)
        self.level_root = level_root
        self.levels = levels
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=False),
                                         nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                children: list[torch.Tensor] | None = None) -> torch.Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        residual = self.project(bottom) if self.project is not None else bottom
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            x1 = self.tree1(x, residual)
            return self.root(self.tree2(x1), x1, *children)
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA34(nn.Module):
    """Returns the six levels' feature maps (strides 1, 2, 4, 8, 16, 32).

    ``fc`` (the ImageNet classifier) is unused but kept: official checkpoints contain it.
    """

    def __init__(self):
        super().__init__()
        self.channels = CHANNELS
        self.base_layer = nn.Sequential(nn.Conv2d(3, CHANNELS[0], 7, stride=1, padding=3, bias=False),
                                        nn.BatchNorm2d(CHANNELS[0]), nn.ReLU(inplace=True))
        self.level0 = nn.Sequential(*conv_bn_relu(CHANNELS[0], CHANNELS[0]))
        self.level1 = nn.Sequential(*conv_bn_relu(CHANNELS[0], CHANNELS[1], stride=2))
        self.level2 = Tree(LEVELS[2], CHANNELS[1], CHANNELS[2], 2, level_root=False)
        self.level3 = Tree(LEVELS[3], CHANNELS[2], CHANNELS[3], 2, level_root=True)
        self.level4 = Tree(LEVELS[4], CHANNELS[3], CHANNELS[4], 2, level_root=True)
        self.level5 = Tree(LEVELS[5], CHANNELS[4], CHANNELS[5], 2, level_root=True)
        self.fc = nn.Conv2d(CHANNELS[-1], 1000, 1, stride=1, padding=0, bias=True)
        init_conv_bn_(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = []
        x = self.base_layer(x)
        for level in (self.level0, self.level1, self.level2, self.level3, self.level4, self.level5):
            x = level(x)
            levels.append(x)
        return levels
