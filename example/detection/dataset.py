"""A deterministic synthetic detection dataset in COCO format: six shape classes a person tells
apart at a glance, on gradients, textures and real photographs (scikit-image's sample data,
shipped inside its wheel: nothing is downloaded).

Every image is a pure function of ``(seed, index)``, so splits are reproducible, can be made on
the fly by training workers or written to disk with ``python -m detection.dataset``.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

CLASSES = ("circle", "rectangle", "triangle", "star", "cross", "ring")
SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
          "ihc.png", "camera.png", "brick.png", "grass.png", "gravel.png", "moon.png", "page.png", "coins.png",
          "clock_motion.png", "color.png")
MIN_VISIBLE = 0.35  # an object hidden more than this by later ones is not annotated


@dataclass
class Sample:
    image: np.ndarray          # HxWx3 BGR uint8, already through JPEG compression
    jpeg: bytes                # the encoded image
    boxes: np.ndarray          # [n, 4] x1, y1, x2, y2 in pixels
    classes: np.ndarray        # [n] indices into CLASSES


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """A sample photograph from scikit-image's data folder (read as files: skimage is not imported).

    The PNGs are decoded by Pillow: OpenCV's libpng prints "iCCP: known incorrect sRGB profile" to
    stderr for some of them, and both give the same pixels (the profile is not applied either way)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-image is not installed: its sample photographs are the dataset's backgrounds")
    path = Path(spec.submodule_search_locations[0]) / "data" / name
    if path.suffix == ".png":
        with Image.open(path) as png:
            return cv2.cvtColor(np.asarray(png.convert("RGB")), cv2.COLOR_RGB2BGR)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f"cannot read {path}")
    return image


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = rng.choice(["gradient", "texture", "photo", "photo"])
    if kind == "photo":
        photo = _photo(str(rng.choice(PHOTOS)))
        scale = max(height / photo.shape[0], width / photo.shape[1]) * rng.uniform(1.0, 1.6)
        photo = cv2.resize(photo, (int(photo.shape[1] * scale) + 1, int(photo.shape[0] * scale) + 1))
        y = rng.integers(0, photo.shape[0] - height + 1)
        x = rng.integers(0, photo.shape[1] - width + 1)
        image = photo[y:y + height, x:x + width].copy()
        return cv2.flip(image, 1) if rng.random() < 0.5 else image
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:height, 0:width]
        t = (xs * np.cos(angle) + ys * np.sin(angle))
        t = (t - t.min()) / max(np.ptp(t), 1)
        return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.uint8)
    noise = rng.normal(0, 1, (height // 8 + 1, width // 8 + 1, 1)).astype(np.float32)
    noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    noise = (noise - noise.min()) / max(np.ptp(noise), 1e-6)
    return (a * (1 - noise) + b * noise).astype(np.uint8)


def _outline(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Polygon(s) of a unit-size shape centred on 0 (a ring has a hole: two polygons, outer first)."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1) * 0.5
    if name == "circle":
        return [circle]
    if name == "ring":
        return [circle, circle * rng.uniform(0.45, 0.7)]
    if name == "rectangle":
        return [np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])]
    if name == "triangle":
        return [np.array([[0.0, -0.5], [0.5, 0.5], [-0.5, 0.5]])]
    if name == "star":
        angles = np.linspace(-np.pi / 2, 1.5 * np.pi, 10, endpoint=False)
        radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.5 * rng.uniform(0.38, 0.5))
        return [np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]]
    arm = rng.uniform(0.14, 0.22)  # cross
    return [np.array([[-arm, -0.5], [arm, -0.5], [arm, -arm], [0.5, -arm], [0.5, arm], [arm, arm], [arm, 0.5],
                      [-arm, 0.5], [-arm, arm], [-0.5, arm], [-0.5, -arm], [-arm, -arm]])]


def _place(rng: np.random.Generator, name: str, height: int, width: int):
    """The shape's polygons in image pixels (always fully inside the image)."""
    limit = min(250, 0.8 * min(height, width))
    size = float(np.exp(rng.uniform(np.log(12), np.log(limit))))
    aspect = 1.0 if name in ("circle", "ring", "star", "cross") and rng.random() < 0.5 else rng.uniform(0.6, 1.6)
    angle = rng.uniform(0, 2 * np.pi) if name != "circle" else 0.0
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    polygons = [(p * [size * aspect, size]) @ rotation.T for p in _outline(name, rng)]
    low, high = polygons[0].min(0), polygons[0].max(0)
    span = high - low
    if span[0] >= width - 2 or span[1] >= height - 2:
        scale = 0.9 * min((width - 2) / span[0], (height - 2) / span[1])
        polygons, low, high = [p * scale for p in polygons], low * scale, high * scale
    centre = np.array([rng.uniform(-low[0] + 1, width - 1 - high[0]), rng.uniform(-low[1] + 1, height - 1 - high[1])])
    return [p + centre for p in polygons]


def _colour(rng: np.random.Generator, background: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """A random colour that stands out from the background under the shape."""
    under = background[mask > 0].mean(0) if mask.any() else np.full(3, 128.0)
    for _ in range(20):
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - under).sum() > 150:
            break
    return tuple(int(c) for c in colour)


def generate(seed: int, index: int) -> Sample:
    """Image ``index`` of the dataset of ``seed``."""
    rng = np.random.default_rng([seed, index])
    height, width = (int(v) for v in rng.integers(256, 640, 2))
    image = _background(rng, height, width)
    visible, drawn, boxes, classes = [], [], [], []
    for _ in range(int(rng.integers(1, 9))):
        label = int(rng.integers(len(CLASSES)))
        polygons = _place(rng, CLASSES[label], height, width)
        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [np.round(polygons[0] * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        for hole in polygons[1:]:
            cv2.fillPoly(mask, [np.round(hole * 16).astype(np.int32)], 0, cv2.LINE_AA, shift=4)
        alpha = mask[..., None].astype(np.float32) / 255
        image = (image * (1 - alpha) + np.array(_colour(rng, image, mask), np.float32) * alpha).astype(np.uint8)
        covered = mask > 127
        for earlier in visible:
            earlier[covered] = False
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        visible.append(covered)
        drawn.append(max(np.count_nonzero(covered), 1))
        classes.append(label)
    keep = [i for i, v in enumerate(visible) if np.count_nonzero(v) >= MIN_VISIBLE * drawn[i]]
    if rng.random() < 0.4:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.5:
        image = np.clip(image + rng.normal(0, rng.uniform(2, 12), image.shape), 0, 255).astype(np.uint8)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 96))])[1].tobytes()
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return Sample(decoded, jpeg, np.array([boxes[i] for i in keep], np.float32).reshape(-1, 4),
                  np.array([classes[i] for i in keep], np.int64))


def coco_split(seed: int, count: int, folder: Path | None = None, first: int = 0) -> dict:
    """The COCO dict (``images``, ``annotations``, ``categories``) of images ``first..first+count``;
    with ``folder``, the JPEGs are written there too. Category ids are class index + 1."""
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
    for index in tqdm(range(first, first + count), desc=f"generating (seed {seed})", unit="image", leave=False):
        sample = generate(seed, index)
        name = f"{seed}_{index:06d}.jpg"
        if folder is not None:
            (Path(folder) / name).write_bytes(sample.jpeg)
        height, width = sample.image.shape[:2]
        coco["images"].append({"id": index + 1, "file_name": name, "width": width, "height": height})
        for box, label in zip(sample.boxes, sample.classes):
            x1, y1, x2, y2 = (float(v) for v in box)
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": index + 1,
                                        "category_id": int(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                        "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    return coco


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a split of the synthetic dataset in COCO format.")
    parser.add_argument("--split", choices=sorted(SPLIT_SEEDS), default="test")
    parser.add_argument("--seed", type=int, help="overrides the split's seed")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    seed = SPLIT_SEEDS[args.split] if args.seed is None else args.seed
    images = args.output / "images"
    images.mkdir(parents=True, exist_ok=True)
    coco = coco_split(seed, args.count, images)
    (args.output / f"instances_{args.split}.json").write_text(json.dumps(coco))
    print(f"Wrote {args.count} images and {len(coco['annotations'])} boxes to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
