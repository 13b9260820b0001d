#!/usr/bin/env bash
# Benchmark the served detection pipeline (see ./bench.sh --help).
exec "$(dirname "${BASH_SOURCE[0]}")/python.sh" -m detection.bench "$@"
