#!/usr/bin/env bash
# Detect objects in images through the served model (see ./client.sh --help).
exec "$(dirname "${BASH_SOURCE[0]}")/python.sh" -m detection.client "$@"
