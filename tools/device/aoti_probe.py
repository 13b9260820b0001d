"""Whether AOTInductor loads on this host: a small conv net exported with a dynamic batch, compiled
by ``torch._inductor.aoti_compile_and_package`` and loaded by ``aoti_load_package``, then compiled
to a bare shared library by the older ``torch._export.aot_compile`` and loaded by ``aot_load``; each
load runs in a child process (a crash is reported with Python's faulthandler and, where gdb exists,
the native stack). Run on the GPU host (see README.md here):

    .venv/bin/python tools/device/aoti_probe.py
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 4, 3, padding=1))

    def forward(self, image):
        return self.body(image).mean(dim=(2, 3))


def load_and_run(path: str) -> None:
    """A package by ``aoti_load_package``; a bare shared library (the older ``aot_compile``) by
    ``torch._export.aot_load``, which skips the package loader."""
    began = time.perf_counter()
    if path.endswith(".so"):
        runner = torch._export.aot_load(path, "cuda")
    else:
        runner = torch._inductor.aoti_load_package(path)
    print(f"loaded {Path(path).name}: {time.perf_counter() - began:.1f} s", flush=True)
    print("output:", tuple(runner(torch.randn(3, 3, 64, 64, device="cuda")).shape), flush=True)


def in_child(path: str) -> int:
    child = [sys.executable, "-X", "faulthandler", __file__, "--load", path]
    run = subprocess.run(child, capture_output=True, text=True, timeout=600)
    print(f"load {Path(path).name} in a child process: exit status {run.returncode}\n{run.stdout}{run.stderr[-3000:]}",
          flush=True)
    if run.returncode != 0 and shutil.which("gdb"):
        native = subprocess.run(["gdb", "-batch", "-ex", "run", "-ex", "bt 30", "--args", *child],
                                capture_output=True, text=True, timeout=600)
        print("native stack (gdb):\n" + native.stdout[-6000:], flush=True)
    return run.returncode


def main(argv: list[str]) -> int:
    if argv[:1] == ["--load"]:
        load_and_run(argv[1])
        return 0
    module = Small().cuda().eval()
    example = (torch.randn(2, 3, 64, 64, device="cuda"),)
    dynamic = [{0: torch.export.Dim("batch", min=1, max=64)}]
    program = torch.export.export(module, example, dynamic_shapes=dynamic)
    folder = Path(tempfile.mkdtemp(prefix="aoti-probe-"))
    began = time.perf_counter()
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(folder / "small.pt2"))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}: aoti_compile_and_package "
          f"{time.perf_counter() - began:.1f} s", flush=True)
    failed = in_child(package)
    began = time.perf_counter()
    library = torch._export.aot_compile(module, example, dynamic_shapes=dynamic)
    print(f"aot_compile (a bare shared library): {time.perf_counter() - began:.1f} s", flush=True)
    return in_child(library) or failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
