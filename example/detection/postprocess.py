"""The postprocess stage in PyTorch, exported to ONNX: CenterNet decoding and the mapping of
boxes back to original-image pixels.

Peaks are the heatmap cells equal to their 3x3 max-pool; the top K over all classes and cells
are kept; each box is its cell plus the predicted offset (``reg``), sized by ``wh``, scaled by
the output stride to network-input pixels, mapped through ``meta_affine`` to the original image
and clipped to it. Every box is well-formed (x1 <= x2, y1 <= y2), whatever its score.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detection import pipeline


class CenterNetDecoder(nn.Module):
    def __init__(self, top_k: int = pipeline.TOP_K, stride: int = pipeline.OUTPUT_STRIDE):
        super().__init__()
        self.top_k, self.stride = top_k, stride

    def forward(self, hm: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor, meta_affine: torch.Tensor,
                meta_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, _, height, width = hm.shape
        heat = torch.sigmoid(hm)
        heat = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
        scores, index = heat.reshape(batch, -1).topk(self.top_k, dim=1)
        cells = height * width
        classes = torch.div(index, cells, rounding_mode="floor")
        cell = index - classes * cells
        ys = torch.div(cell, width, rounding_mode="floor").to(hm.dtype)
        xs = (cell - torch.div(cell, width, rounding_mode="floor") * width).to(hm.dtype)
        gather = cell.unsqueeze(1).expand(batch, 2, self.top_k)
        offset = reg.reshape(batch, 2, -1).gather(2, gather)
        size = wh.reshape(batch, 2, -1).gather(2, gather)
        cx, cy = xs + offset[:, 0], ys + offset[:, 1]
        # The wh head is unconstrained: a negative size (low-score peaks, image edges) would invert its box.
        half_w, half_h = size[:, 0].clamp(min=0) / 2, size[:, 1].clamp(min=0) / 2
        x = torch.stack([cx - half_w, cx + half_w], dim=2) * self.stride  # [batch, K, 2] input pixels
        y = torch.stack([cy - half_h, cy + half_h], dim=2) * self.stride
        a = meta_affine.unsqueeze(1)  # [batch, 1, 2, 3]
        x_orig = a[..., 0, 0:1] * x + a[..., 0, 1:2] * y + a[..., 0, 2:3]
        y_orig = a[..., 1, 0:1] * x + a[..., 1, 1:2] * y + a[..., 1, 2:3]
        image_h, image_w = meta_size[:, 0:1, None], meta_size[:, 1:2, None]
        x_orig = torch.minimum(torch.clamp(x_orig, min=0.0), image_w)
        y_orig = torch.minimum(torch.clamp(y_orig, min=0.0), image_h)
        boxes = torch.stack([x_orig[..., 0], y_orig[..., 0], x_orig[..., 1], y_orig[..., 1]], dim=2)
        return boxes, scores, classes.to(torch.int32)


class DecodedDetector(nn.Module):
    """The network and its decoding as one model, for a GPU: only the detections (a few KB per image)
    leave it, where the separate postprocess had the heads (655 KB per image at input 512) cross
    between two models. ``half_network`` gives its FP16 form: the network's (``CenterNet.half``: FP16
    but for the heads' last convolutions), the decoding (box coordinates in original pixels) in FP32."""

    def __init__(self, network: nn.Module, decoder: nn.Module | None = None):
        super().__init__()
        self.network, self.decoder = network, decoder or CenterNetDecoder()

    def forward(self, image: torch.Tensor, meta_affine: torch.Tensor,
                meta_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = next(self.network.parameters()).dtype
        heads = [head.float() for head in self.network(image.to(dtype))]
        return self.decoder(*heads, meta_affine, meta_size)

    @staticmethod
    def half_network(detector: "DecodedDetector") -> "DecodedDetector":
        detector.network.half()
        return detector
