"""Serving a model repository: the Python-based backends, the embedded server and its launcher.

``serve(repository)`` runs a server for a ``with`` block; ``start.sh`` is its command line.
"""
from __future__ import annotations

__all__ = ["LaunchError", "Ports", "Server", "serve"]


def __getattr__(name: str):
    """The launcher's names, imported when first asked for: ``python -m trtis.serving.supervisor``
    (and ``front_door``) then run without the package having imported them first."""
    if name in __all__:
        from trtis.serving import launcher

        return getattr(launcher, name)
    raise AttributeError(f"module 'trtis.serving' has no attribute {name!r}")
