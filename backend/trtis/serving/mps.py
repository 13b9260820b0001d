"""CUDA MPS for one server (``start.sh --mps``): the GPU runs the model instances' kernels side by side.

Each instance of a Python-based model is its own process with its own CUDA context, and a GPU
time-slices between contexts. Under NVIDIA's Multi-Process Service the processes share one context
on the GPU, so a preprocess batch and two network batches run at once: on one H100 the GPU pipeline
served 1.7-1.8x the requests per second with it, same instances (docs/performance/gpu.md).

The control daemon started here has private pipe and log folders in the server's state folder, and
only the server's processes are told where they are (``CUDA_MPS_PIPE_DIRECTORY``), so other CUDA
programs of the host are not affected; stopping the server quits it (its log stays in ``mps/log``).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
FOLDER = "mps"


class MpsError(RuntimeError):
    """MPS could not be started as asked."""


def _environment(state_dir: Path) -> dict[str, str]:
    folder = Path(state_dir).resolve() / FOLDER
    return {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}


def start(state_dir: Path) -> dict[str, str]:
    """Start a control daemon for the server of ``state_dir``; returns the variables its processes
    need. A refusal leaves no pipe folder behind (the log folder stays, for the reason)."""
    control = shutil.which(CONTROL)
    if control is None:
        raise MpsError(f"--mps needs NVIDIA's MPS control daemon ({CONTROL}, installed with the NVIDIA driver) "
                       "and a GPU; it is not on PATH here: start without --mps")
    variables = _environment(state_dir)
    if len(variables["CUDA_MPS_PIPE_DIRECTORY"]) > 90:  # a UNIX socket path has at most 107 bytes
        raise MpsError(f"--mps: the state folder's path is too long for MPS's sockets "
                       f"({variables['CUDA_MPS_PIPE_DIRECTORY']}): choose a shorter --state-dir")
    for folder in variables.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    result = subprocess.run([control, "-d"], env={**os.environ, **variables}, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(variables["CUDA_MPS_PIPE_DIRECTORY"], ignore_errors=True)
        raise MpsError(f"{CONTROL} -d failed ({result.returncode}): {(result.stderr or result.stdout).strip()}; "
                       f"its log is in {variables['CUDA_MPS_LOG_DIRECTORY']}")
    return variables


def stop(state_dir: Path, timeout: float = 20) -> bool:
    """Quit the control daemon of ``state_dir``'s server, if one was started (its log stays); returns
    whether one was. MPS quits once its clients are gone: call it after the server has ended; a
    daemon that still waits for one is left, with a warning, for the next stop."""
    variables = _environment(state_dir)
    pipe = Path(variables["CUDA_MPS_PIPE_DIRECTORY"])
    control = shutil.which(CONTROL)
    if not pipe.is_dir():
        return False
    if control is not None and any(pipe.iterdir()):
        try:
            subprocess.run([control], input="quit\n", env={**os.environ, **variables}, capture_output=True,
                           text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("the MPS control daemon of %s did not quit within %.0f s (a GPU process still uses it); "
                        "./start.sh --stop tries again", state_dir, timeout)
            return True
    shutil.rmtree(pipe, ignore_errors=True)
    return True
