"""Which of CenterNet's heads need their last 1x1 convolution in FP32, and what each FP16 form costs:
the eager form's mAP on the 200 test images (in process, OpenCV preprocess) and the compiled form's
time at batch 1 and 32, for FP16 throughout, the ``wh`` head's convolution in FP32, and all three
(``CenterNet.half``'s form). Run on the GPU host (see README.md); compiles three times (minutes).

    PYTHONPATH=example .venv/bin/python tools/device/fp16_heads_probe.py
"""
from __future__ import annotations

import copy
import time

import torch

from detection import dataset, pipeline
from detection.accuracy import OnDevice, in_process, score
from detection.network import DEFAULT_CHECKPOINT, load_network
from detection.network.centernet import InFloat32
from detection.reference import ReferencePipeline

FORMS = {"FP16 throughout": (), "wh in FP32": ("wh",), "all three in FP32": pipeline.HEADS}


class Half(torch.nn.Module):
    """FP32 in, FP16 network, FP32 heads out; ``nn.Module.half``, not ``CenterNet.half`` (which is the third form)."""

    def __init__(self, network: torch.nn.Module, heads: tuple[str, ...]):
        super().__init__()
        self.network = torch.nn.Module.half(copy.deepcopy(network))
        for head in heads:
            layers = getattr(self.network, head)
            layers[-1] = InFloat32(layers[-1])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(head.float() for head in self.network(image.half()))


def form(network: torch.nn.Module, heads: tuple[str, ...]) -> torch.nn.Module:
    """``network`` in FP16 with the last convolution of ``heads`` in FP32, on the GPU, channels-last."""
    return Half(network, heads).to("cuda", memory_format=torch.channels_last)


def main() -> None:
    torch.backends.cudnn.allow_tf32 = False  # the mAPs: FP32 means FP32 (TF32 back on for the timings, as served)
    network, _ = load_network(DEFAULT_CHECKPOINT)
    seed = dataset.SPLIT_SEEDS["test"]
    truth = dataset.coco_split(seed, 200)
    images = [dataset.generate(seed, i).jpeg for i in range(200)]
    print(f"FP32: mAP {score(truth, in_process(ReferencePipeline(OnDevice(network.cuda(), 'cuda')), images))['map']:.4f}")
    for name, heads in FORMS.items():
        found = score(truth, in_process(ReferencePipeline(OnDevice(form(network, heads), "cuda")), images))
        print(f"eager, {name}: mAP {found['map']:.4f}", flush=True)
    torch.backends.cudnn.allow_tf32 = True
    for name, heads in FORMS.items():
        compiled = torch.compile(form(network, heads), dynamic=True)
        for batch, runs in ((1, 50), (32, 20)):
            x = torch.randn(batch, 3, 512, 512, device="cuda").contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                for _ in range(3):
                    compiled(x)
                torch.cuda.synchronize()
                began = time.perf_counter()
                for _ in range(runs):
                    compiled(x)
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - began) / runs
            print(f"compiled, {name}: batch {batch}: {1000 * seconds:.2f} ms ({batch / seconds:.0f} images/s)", flush=True)


if __name__ == "__main__":
    main()
