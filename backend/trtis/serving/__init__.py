"""Serving a model repository: the Python-based backends, the embedded server and its launcher."""
