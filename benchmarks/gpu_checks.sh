#!/bin/bash
# The GPU checks of issues #10 and #15 as one prepared run for the GPU machine (feasibility.md §11: torch 2.11 with
# CUDA, transformers 5.17, accelerate; no network, no pip index; 64 MiB of files travel, so no real weights).
#
#   * steering overhead in float16 / bfloat16: does folding PASTA's bias into SDPA as a 65th q/k channel push SDPA
#     off its fused kernel? (random weights of SmolLM2's and Llama-3-8B's shapes: exact for timing)
#
# Before: put the wheels the image lacks in wheels/ (ignored by git; carry it), e.g.
#   pip download --no-deps --only-binary :all: -d wheels transformers==5.23.0 pydantic pydantic-core rich typer
# Run: the device tool, command "bash benchmarks/gpu_checks.sh", timeout_s 540. Results land in $OUT.
# Not yet run on the GPU machine: no task of this project has had one since the script was written.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if compgen -G "wheels/*.whl" > /dev/null; then
    pip install --no-deps --no-index wheels/*.whl > "$OUT/pip.txt" 2>&1
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch, transformers; print(torch.__version__, transformers.__version__)" > "$OUT/versions.txt" 2>&1
timeout 240 python benchmarks/steer_overhead.py --model shape:smollm2 --device cuda --dtype float16 \
    --lengths 512 2048 8192 --repeats 3 --threads 4 > "$OUT/steer-smollm2-shape-fp16.txt" 2>&1
timeout 200 python benchmarks/steer_overhead.py --model shape:llama3-8b --device cuda --dtype bfloat16 \
    --lengths 2048 8192 --repeats 2 --methods sdpa,attnlab --threads 4 > "$OUT/steer-llama3-8b-shape-bf16.txt" 2>&1
tail -n 12 "$OUT"/steer-*.txt
