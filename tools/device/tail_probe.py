"""Where the slowest requests at one in flight come from: every test image sent alone, in rounds, its
latency kept per image and round. Slow requests that repeat for the same images point at the images
(size, decode); slow requests scattered over images and rounds point at the host. ``--in-process``
times the same steps without the server (the GPU preprocess, the compiled FP16 network with its
decoding), for the share the serving adds. Run on the GPU host (see README.md).

    .venv/bin/python tools/device/tail_probe.py [--rounds 5] [--url 127.0.0.1:7001]
    PYTHONPATH=example .venv/bin/python tools/device/tail_probe.py --in-process
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

IMAGES = Path(".device/extras/test/images")  # gpu-figures.sh generates them


def served(url: str) -> Callable[[bytes], object]:
    """One image per request to the ``detection`` ensemble at ``url`` (gRPC), as a user's client sends."""
    from trt_client import client

    runner = client.Inference(url, "detection", "1")
    return lambda data: runner.run(input={"raw_image": np.array([data], dtype=bytes)})


def in_process() -> Callable[[bytes], object]:
    """The served steps in one process, one image at a time (``torch.compile`` of the FP16 form compiles
    anew here: a minute)."""
    import copy

    import torch

    from detection import gpu_preprocess
    from detection.network import DEFAULT_CHECKPOINT, load_network
    from detection.postprocess import DecodedDetector

    network, _ = load_network(DEFAULT_CHECKPOINT)
    detector = DecodedDetector.half_network(DecodedDetector(copy.deepcopy(network)))
    model = torch.compile(detector.to("cuda", memory_format=torch.channels_last), dynamic=True)

    def run(data: bytes) -> object:
        (prepared,) = gpu_preprocess.prepare([{"raw_image": np.array([data], dtype=object)}], "cuda",
                                             {"input_size": "512"}, torch.float16)
        with torch.inference_mode():
            outputs = model(prepared["image"].contiguous(memory_format=torch.channels_last),
                            *(torch.from_numpy(prepared[k]).cuda() for k in ("meta_affine", "meta_size")))
        return [output.cpu() for output in outputs]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--url", default="127.0.0.1:7001")
    parser.add_argument("--in-process", action="store_true", help="without the server")
    args = parser.parse_args()
    files = sorted(IMAGES.glob("*.jpg"))
    data = [path.read_bytes() for path in files]
    run = in_process() if args.in_process else served(args.url)
    for image in data:  # warm-up: every image once
        run(image)
    latency = np.zeros((args.rounds, len(data)))
    for round_ in range(args.rounds):
        for index, image in enumerate(data):
            began = time.perf_counter()
            run(image)
            latency[round_, index] = 1000 * (time.perf_counter() - began)
    flat = latency.ravel()
    print(f"{'in process' if args.in_process else 'served'}, {flat.size} requests one at a time: p50 "
          f"{np.percentile(flat, 50):.2f}, p90 {np.percentile(flat, 90):.2f}, p99 {np.percentile(flat, 99):.2f}, "
          f"max {flat.max():.1f} ms")
    for k in np.argsort(flat)[::-1][:10]:
        round_, index = divmod(int(k), len(data))
        print(f"  {flat[k]:.1f} ms: round {round_}, {files[index].name} ({len(data[index])} B; its median "
              f"{np.median(latency[:, index]):.1f} ms)")


if __name__ == "__main__":
    main()
