#!/usr/bin/env bash
# Rebuild the bundled `tiny` checkpoint from scratch (about 75 minutes of one CPU core per phase here).
# Usage: bash scripts/train_tiny.sh [WORKDIR]   -> writes WORKDIR/phase2 (copy it to src/attnlab/models/tiny)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/attnlab-tiny}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$WORK"
"$PY" scripts/build_corpus.py "$WORK/corpus"
# phase 1: English prose mixed 50/50 with the synthetic tasks, schedule for 6000 steps, stopped at 1750
"$PY" -m attnlab.models.train_tiny --corpus "$WORK/corpus/corpus.txt" --out "$WORK/phase1" \
  --steps 6000 --stop-after 1750 --lr 6e-3 --weight-decay 0.3 --synth 0.5 --seed 1
# phase 2: resumed with 75% synthetic tasks (see src/attnlab/models/tiny/README.md for the step it ended at)
"$PY" -m attnlab.models.train_tiny --corpus "$WORK/corpus/corpus.txt" --out "$WORK/phase2" --init "$WORK/phase1" \
  --steps 4500 --stop-after "${PHASE2_STEPS:-4500}" --lr 3e-3 --weight-decay 0.3 --synth 0.75 --warmup 100 --seed 2
echo "checkpoint in $WORK/phase2"
