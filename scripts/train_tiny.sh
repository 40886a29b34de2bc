#!/usr/bin/env bash
# Rebuild the bundled `tiny` checkpoint from scratch (about 25 + 65 + 65 minutes of one CPU core here).
# Usage: bash scripts/train_tiny.sh [WORKDIR]   -> writes WORKDIR/phase3 (copy it to src/attnlab/models/tiny)
# The exact arguments of each phase are also in the first line of its train_log.jsonl and in the model card.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/attnlab-tiny}
PY=${PYTHON:-.venv/bin/python}
TRAIN="$PY -m training.train_tiny --corpus $WORK/corpus/corpus.txt"
mkdir -p "$WORK"
"$PY" scripts/build_corpus.py "$WORK/corpus"
# phase 1: English prose mixed 50/50 with synthetic task mix v1, schedule for 6000 steps, stopped at 1750
$TRAIN --out "$WORK/phase1" --mix v1 --steps 6000 --stop-after 1750 --lr 6e-3 --weight-decay 0.3 --synth 0.5 --seed 1
# phase 2: resumed with 75% synthetic (mix v1)
$TRAIN --out "$WORK/phase2" --init "$WORK/phase1" --mix v1 --steps 4500 --lr 3e-3 --weight-decay 0.3 --synth 0.75 \
  --warmup 100 --seed 2
# phase 3: mix v2 (long copy lists, repeated prose passages): induction heads, then sinks on prose
$TRAIN --out "$WORK/phase3" --init "$WORK/phase2" --mix v2 --steps 5500 --lr 3e-3 --weight-decay 0.5 --synth 0.6 \
  --warmup 100 --seed 3
echo "checkpoint in $WORK/phase3"
