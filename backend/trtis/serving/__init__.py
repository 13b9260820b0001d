"""Serving a model repository: the Python-based backends, the embedded server and its launcher.

``serve(repository)`` runs a server for a ``with`` block; ``start.sh`` is its command line.
"""
from trtis.serving.launcher import LaunchError, Ports, Server, serve

__all__ = ["LaunchError", "Ports", "Server", "serve"]
