#!/usr/bin/env bash
# Convert the CenterNet example into ./model_repository (see ./convert.sh --help).
exec "$(dirname "${BASH_SOURCE[0]}")/python.sh" -m detection.convert "$@"
