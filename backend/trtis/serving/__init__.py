"""Serving a model repository: the Python-based backends, the embedded server and its launcher.

``serve(repository)`` runs a server for a ``with`` block; ``start.sh`` is its command line.
"""
from __future__ import annotations

# Where each public name lives, imported when first asked for: ``python -m trtis.serving.supervisor``
# (and ``front_door``) then run without the package having imported the rest first.
_HOMES = {"LaunchError": "state_folder", "Ports": "ports", "Server": "server", "ServerConfig": "server_config",
          "serve": "server"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """The public names of the serving modules, imported on first use."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"trtis.serving.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'trtis.serving' has no attribute {name!r}")
