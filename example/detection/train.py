"""Train the example's CenterNet from scratch on the synthetic dataset, as the official recipe does.

Focal loss on Gaussian heatmaps, L1 on sizes and offsets; random scale, shift and flip.

    python -m detection.train --output example/detection/weights --device cuda --minutes 8
    python -m detection.train --output /tmp/smoke --device cpu --input-size 128 --iterations 20 --images 8

Writes ``centernet_dlav0_34.pth`` (official format, FP16) with its ``.json`` (class names and how
it was trained) and, every ``--save-every`` iterations, ``model_last.pth`` with the optimizer
for ``--resume``.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from detection import dataset, letterbox, pipeline
from detection.network import NetworkSpec, save_checkpoint
from detection.network.centernet import CenterNet
from detection.targets import centernet_loss, make_targets


def _generate(args: tuple[int, int]) -> tuple[bytes, np.ndarray, np.ndarray]:
    sample = dataset.generate(*args)
    return sample.jpeg, sample.boxes, sample.classes


def generate_images(seed: int, count: int, processes: int) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
    """The training images, made in parallel and kept as JPEG bytes in memory."""
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return list(tqdm(pool.imap(_generate, [(seed, i) for i in range(count)], chunksize=16), total=count,
                         desc="generating training images", unit="image"))


class AugmentedShapes(Dataset):
    """Official ctdet augmentation: random scale (0.6-1.4) and shift (0.1 of the size) of the crop,
    horizontal flip, then the same affine warp and normalisation as at test time."""

    def __init__(self, samples: list, input_size: int, seed: int):
        self.samples, self.input_size, self.seed = samples, input_size, seed
        self.draws = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        self.draws += 1
        rng = np.random.default_rng([self.seed, index, self.draws, torch.initial_seed() % 2**31])
        jpeg, boxes, classes = self.samples[index]
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        height, width = image.shape[:2]
        boxes = boxes.copy()
        if rng.random() < 0.5:
            image = image[:, ::-1]
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        scale = max(height, width) * float(np.clip(rng.normal(1, 0.4), 0.6, 1.4))
        centre = np.array([width / 2, height / 2]) + scale * np.clip(rng.normal(0, 0.1, 2), -0.2, 0.2)
        k = self.input_size / scale
        affine = np.array([[k, 0, self.input_size / 2 - k * centre[0]], [0, k, self.input_size / 2 - k * centre[1]]])
        warped = cv2.warpAffine(np.ascontiguousarray(image), affine, (self.input_size, self.input_size),
                                flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        normalised = (warped.astype(np.float32) / 255 - letterbox.MEAN_BGR) / letterbox.STD_BGR
        out = self.input_size // pipeline.OUTPUT_STRIDE
        corners = np.concatenate([boxes[:, :2], boxes[:, 2:]], 0)
        mapped = corners @ affine[:, :2].T + affine[:, 2]
        mapped = np.concatenate([mapped[:len(boxes)], mapped[len(boxes):]], 1) / pipeline.OUTPUT_STRIDE
        targets = make_targets(mapped.astype(np.float32), classes, len(dataset.CLASSES), out)
        return {"image": normalised.transpose(2, 0, 1).copy(), **targets}


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def train(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    spec = NetworkSpec(list(dataset.CLASSES))
    network = CenterNet(len(spec.class_names)).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    start = 0
    if args.resume:
        state = torch.load(args.resume, map_location=device, weights_only=True)
        network.load_state_dict({k.removeprefix("module."): v.float() for k, v in state["state_dict"].items()})
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        start = int(state.get("iteration", state.get("epoch", 0)))
        print(f"Resumed from {args.resume} at iteration {start}")
    samples = generate_images(dataset.SPLIT_SEEDS["train"], args.images, args.workers or 1)
    loader = DataLoader(AugmentedShapes(samples, args.input_size, args.seed), batch_size=args.batch_size,
                        shuffle=True, num_workers=args.workers, drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=args.workers > 0)
    torch.backends.cudnn.benchmark = True
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    total, deadline = args.iterations, time.monotonic() + args.minutes * 60
    history, step, began = [], start, time.monotonic()
    halfway, halfway_step = began, start
    progress = tqdm(total=total, initial=start, desc="training", unit="it")
    network.train()
    while step < total:
        for batch in loader:
            if step >= total:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, args.lr, args.warmup)
            with autocast:
                heads = network(batch["image"].to(memory_format=torch.channels_last))
            losses = centernet_loss(heads, batch)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 35.0)
            optimizer.step()
            step += 1
            if step % 10 == 0 or step == total:
                values = {k: round(v.item(), 4) for k, v in losses.items()}
                history.append({"iteration": step, **values})
                progress.set_postfix(values)
            progress.update()
            if step == start + args.warmup // 2:
                halfway, halfway_step = time.monotonic(), step
            if args.minutes and step >= start + args.warmup and step % 100 == 0:
                # Fit the schedule to the time left, at the rate measured since the middle of
                # warm-up (the first steps include cuDNN's autotuning); refitted as training goes.
                rate = (step - halfway_step) / (time.monotonic() - halfway)
                total = max(step + 1, min(args.iterations, step + int(rate * (deadline - time.monotonic() - 20))))
                progress.total = total
            if step % args.save_every == 0:
                save_checkpoint(network, spec, args.output / "model_last.pth", epoch=step,
                                optimizer=optimizer.state_dict(), iteration=step)
    progress.close()
    return {"iterations": step, "seconds": round(time.monotonic() - began, 1), "history": history,
            "network": network, "spec": spec}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--input-size", type=int, default=pipeline.INPUT_SIZE)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=20000, help="upper bound; --minutes may end sooner")
    parser.add_argument("--minutes", type=float, default=0, help="time budget; the LR schedule is fitted to it")
    parser.add_argument("--images", type=int, default=8000, help="training images generated (seed of the train split)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--workers", type=int, default=max(1, (multiprocessing.cpu_count() or 2) - 1))
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", type=Path)
    args = parser.parse_args(argv)
    if args.images < args.batch_size:
        parser.error(f"--images {args.images} makes no batch of --batch-size {args.batch_size} (incomplete batches "
                     f"are dropped): generate at least {args.batch_size} images, or lower --batch-size")
    args.warmup = min(args.warmup, max(1, args.iterations // 10))
    args.output.mkdir(parents=True, exist_ok=True)
    result = train(args)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    spec = result["spec"]
    spec.extra["training"] = {
        "command": "python -m detection.train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "seed": args.seed, "iterations": result["iterations"], "batch_size": args.batch_size,
        "input_size": args.input_size, "images": args.images, "seconds": result["seconds"], "device": device_name,
        "torch": torch.__version__, "final_losses": result["history"][-1] if result["history"] else {},
        "date": time.strftime("%Y-%m-%d"),
    }
    path = args.output / "centernet_dlav0_34.pth"
    save_checkpoint(result["network"].float().cpu(), spec, path, epoch=result["iterations"], half=True)
    (args.output / "training_log.json").write_text(json.dumps(result["history"]))
    print(f"Saved {path} after {result['iterations']} iterations in {result['seconds']} s on {device_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
