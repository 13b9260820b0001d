"""CenterNet's training targets and losses: Gaussian heatmap peaks at object centres (radius
from the CornerNet overlap rule), sizes and sub-pixel offsets at those centres; focal loss on the
heatmap, L1 on sizes and offsets."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MAX_OBJECTS = 32


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """The largest corner displacement that keeps IoU >= ``min_overlap`` (the three cases of CornerNet)."""
    a1, b1 = 1, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2 = 4, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: np.ndarray, centre: tuple[int, int], radius: int) -> None:
    """Stamp a Gaussian (sigma = diameter / 6) at ``centre``, keeping the maximum where peaks overlap."""
    diameter = 2 * radius + 1
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    sigma = diameter / 6
    gaussian = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    x, y = centre
    height, width = heatmap.shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    region = heatmap[y - top:y + bottom, x - left:x + right]
    patch = gaussian[radius - top:radius + bottom, radius - left:radius + right]
    np.maximum(region, patch, out=region)


def make_targets(boxes: np.ndarray, classes: np.ndarray, num_classes: int, size: int) -> dict[str, np.ndarray]:
    """Targets on the ``size`` x ``size`` output grid for boxes already in output-grid coordinates."""
    hm = np.zeros((num_classes, size, size), np.float32)
    wh = np.zeros((MAX_OBJECTS, 2), np.float32)
    reg = np.zeros((MAX_OBJECTS, 2), np.float32)
    index = np.zeros(MAX_OBJECTS, np.int64)
    mask = np.zeros(MAX_OBJECTS, np.float32)
    for k, (box, label) in enumerate(zip(boxes[:MAX_OBJECTS], classes[:MAX_OBJECTS])):
        box = np.clip(box, 0, size - 1)
        w, h = box[2] - box[0], box[3] - box[1]
        if w <= 0 or h <= 0:
            continue
        radius = max(0, int(gaussian_radius(math.ceil(h), math.ceil(w))))
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
        cell = centre.astype(np.int32)
        draw_gaussian(hm[label], (int(cell[0]), int(cell[1])), radius)
        wh[k], reg[k] = (w, h), centre - cell
        index[k], mask[k] = cell[1] * size + cell[0], 1
    return {"hm": hm, "wh": wh, "reg": reg, "index": index, "mask": mask}


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CornerNet's variant of the focal loss (alpha 2, beta 4), normalised by the number of peaks."""
    pred = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    negative_weight = torch.pow(1 - target, 4) * (1 - positive)
    positive_loss = (torch.log(pred) * torch.pow(1 - pred, 2) * positive).sum()
    negative_loss = (torch.log(1 - pred) * torch.pow(pred, 2) * negative_weight).sum()
    count = positive.sum()
    return -negative_loss if count == 0 else -(positive_loss + negative_loss) / count


def gathered_l1(output: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the map ``output`` [B, 2, H, W] read at the object cells and the targets [B, K, 2]."""
    batch, channels = output.shape[:2]
    values = output.float().reshape(batch, channels, -1).gather(2, index.unsqueeze(1).expand(batch, channels, -1))
    values = values.permute(0, 2, 1)
    weight = mask.unsqueeze(2).expand_as(values)
    return F.l1_loss(values * weight, target * weight, reduction="sum") / (weight.sum() + 1e-4)


def centernet_loss(heads: tuple[torch.Tensor, ...], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official weights: heatmap 1, size 0.1, offset 1."""
    hm, wh, reg = heads
    losses = {"hm": focal_loss(hm, batch["hm"]),
              "wh": gathered_l1(wh, batch["index"], batch["mask"], batch["wh"]),
              "reg": gathered_l1(reg, batch["index"], batch["mask"], batch["reg"])}
    losses["loss"] = losses["hm"] + 0.1 * losses["wh"] + losses["reg"]
    return losses
