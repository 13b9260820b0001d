"""The backends folder a Triton server reads, laid out one way for the embedded server and the image.

Triton finds the backend a config names (``backend: "torch_compile"``, or the one its platform
implies) as ``<backends>/<name>/``: a ``libtriton_<name>.so`` there is a native backend, a
``model.py`` a Python-based one, which the ``python`` backend beside it runs. ``lay_out`` puts the
project's Python-based backends (``trtis/serving/backends``) into such a folder under their names,
except where the folder has that backend natively, and (``--importable``, an image) where this
Python cannot import what its runtime needs: the official image keeps its own onnxruntime, pytorch
and tensorrt (and tensorflow up to 25.02), and gains ``torch_compile``, the one whose packages
(torch) it was given, so that check-backends.sh still refuses a TensorFlow graph on a tag without
TensorFlow; the embedded server, whose binary has only the python backend, gets all five.
``install.sh`` (through ``trtis.serving.embedded``) and the project's Dockerfile both run it, so the
two trees differ only in what the image has natively and what it installs:

    python3 -m trtis.serving.backend_tree /opt/tritonserver/backends --copy --importable
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PROJECT_BACKENDS = Path(__file__).parent / "backends"
# What each project backend's runtime (trtis.runtimes) imports to serve a model.
NEEDS = {"onnxruntime": ("onnxruntime",), "pytorch": ("torch",), "torch_compile": ("torch",),
         "tensorflow": ("tensorflow",), "tensorrt": ("tensorrt",)}


class BackendTreeError(RuntimeError):
    """The folder cannot serve the project's Python-based backends."""


def native(folder: Path) -> bool:
    """Whether ``folder`` holds a native (shared-library) backend."""
    return folder.is_dir() and not folder.is_symlink() and any(folder.glob("libtriton_*.so"))


def lay_out(backends: Path, *, copy: bool = False, importable: bool = False) -> dict[str, str]:
    """Put each of the project's Python-based backends into ``backends`` (linked, or copied for an
    image), leaving a native one of the same name alone, and with ``importable`` one whose runtime's
    packages this Python lacks; returns ``{name: "native" | "project" | "left out"}``. Safe to re-run:
    what an earlier run put there is replaced."""
    import importlib.util

    backends = Path(backends)
    if not (backends / "python").is_dir():
        raise BackendTreeError(f"{backends} has no python backend, which runs the project's Python-based backends: "
                               "use an image with the Python backend (the -py3 tags), or run ./install.sh")
    laid = {}
    for source in sorted(PROJECT_BACKENDS.iterdir()):
        if not (source / "model.py").is_file():
            continue
        target = backends / source.name
        if native(target):
            laid[source.name] = "native"
            continue
        if importable and any(importlib.util.find_spec(package) is None for package in NEEDS.get(source.name, ())):
            laid[source.name] = "left out"
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        if copy:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.symlink_to(source, target_is_directory=True)
        laid[source.name] = "project"
    return laid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtis.serving.backend_tree", description=__doc__.splitlines()[0])
    parser.add_argument("backends", type=Path, help="the server's backends folder (the image's /opt/tritonserver/backends)")
    parser.add_argument("--copy", action="store_true", help="copy the backends instead of linking them (an image)")
    parser.add_argument("--importable", action="store_true",
                        help="leave out a backend whose runtime's packages this Python cannot import (an image)")
    args = parser.parse_args(argv)
    try:
        laid = lay_out(args.backends, copy=args.copy, importable=args.importable)
    except BackendTreeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.backends}: " + ", ".join(f"{name} ({kind})" for name, kind in laid.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
