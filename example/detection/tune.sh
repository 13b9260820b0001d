#!/usr/bin/env bash
# Sweep the served models' instance counts and batching (see ./tune.sh --help).
exec "$(dirname "${BASH_SOURCE[0]}")/python.sh" -m detection.tune "$@"
