"""First-call and steady times of the compiled network per batch size, as the torch_compile backend
loads it, to see which batch sizes recompile (run on the GPU host after convert.sh; see README.md).

    .venv/bin/python tools/device/compile_probe.py model_repository/detection-network/1/model.pt2
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from trtis.config import from_text
from trtis.runtimes import CompiledRuntime


def main(path: str) -> None:
    torch._logging.set_logs(recompiles=True)
    inputs = {"image": torch.float16, "meta_affine": torch.float32, "meta_size": torch.float32}
    runtime = CompiledRuntime("probe", path, "cuda:0", {}, {k: None for k in inputs}, ["boxes", "scores", "classes"],
                              keep_on_device=True)
    # Up to the model's max batch size: the program was exported with its batch axis bounded by it.
    largest = from_text((Path(path).parents[1] / "config.pbtxt").read_text()).max_batch_size
    for batch in [b for b in (1, 2, 3, 4, 8, 16, 32, 37, 52, 64, 64, 33, 5) if b <= largest]:
        feed = {"image": torch.randn(batch, 3, 512, 512, device="cuda", dtype=torch.float16),
                "meta_affine": torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device="cuda").expand(batch, 2, 3).contiguous(),
                "meta_size": torch.full((batch, 2), 512.0, device="cuda")}
        times = []
        for _ in range(3):
            torch.cuda.synchronize()
            began = time.perf_counter()
            runtime.run(feed)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - began)
        print(f"batch {batch:3d}: first {times[0] * 1000:9.1f} ms, then {min(times[1:]) * 1000:7.2f} ms "
              f"({batch / min(times[1:]):7.0f} images/s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
