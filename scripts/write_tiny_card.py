"""Write the bundled model's card (src/attnlab/models/tiny/README.md) from measured figures.

    python -m training.card tiny --json-out /tmp/card.json
    python scripts/write_tiny_card.py /tmp/card.json v1=PHASE1_LOG v1=PHASE2_LOG v2=PHASE3_LOG

Each phase's row (command, steps, tokens, losses) is read from its ``train_log.jsonl``: the first line
holds the arguments the run was started with, the last evaluation line where it ended. ``MIX=`` names
the synthetic task mix for logs written before ``--mix`` existed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

TINY = Path(__file__).resolve().parent.parent / "src/attnlab/models/tiny"


FLAGS = ("steps", "lr", "weight_decay", "synth", "warmup", "seed")


def phase_row(number: int, log: Path, mix: str) -> str:
    """One row of the training table: the command the log's run was started with, and where it ended."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    args, last = [r for r in rows if "args" in r][-1]["args"], [r for r in rows if "step" in r][-1]
    command = f"python -m training.train_tiny --corpus corpus.txt --out phase{number}"
    if args.get("init"):
        command += f" --init phase{number - 1}"
    command += f" --mix {args.get('mix', mix)}"
    command += "".join(f" --{k.replace('_', '-')} {args[k]}" for k in FLAGS)
    if last["step"] < args["steps"]:
        command += f" --stop-after {last['step']}"
    return (f"| {number} | `{command}` | {last['step']} | {last['tokens'] / 1e6:.1f} M | {last['train_loss']} "
            f"| {last['val_prose_loss']} |")


def main() -> None:
    figures = json.loads(Path(sys.argv[1]).read_text())
    phases = []
    for number, spec in enumerate(sys.argv[2:], 1):
        mix, _, log = spec.rpartition("=")
        phases.append(phase_row(number, Path(log), mix or "v2"))
    config = json.loads((TINY / "config.json").read_text())
    kv = figures["kv_recall"]
    prose_heads = figures["prose_heads_beyond_layer0_with_sink"]
    card = f"""# tiny — the model bundled with attnlab

A {config['num_hidden_layers']}-layer Llama-architecture causal LM (hidden {config['hidden_size']},
{config['num_attention_heads']} query heads / {config['num_key_value_heads']} KV heads of {config['head_dim']},
MLP {config['intermediate_size']}, {config['max_position_embeddings']} positions, byte-level BPE of
{config['vocab_size']} tokens with `<|bos|>` prepended to every text), trained by this project on one CPU
core so that `attnlab` does something real on a fresh, offline machine. It is a functional fixture for
the seam, probes, steering, evaluation and caches — **not** a capable language model. It has induction
heads and partial in-context retrieval, and a first-token sink in **{prose_heads} of {figures['heads_beyond_layer0']}**
heads beyond layer 0 on prose — a real but weak sink, not the "most heads" of large models: see
"What it does not have".

## Data

* English prose from Debian packages, fetched and cleaned by `scripts/build_corpus.py` (18 MB, 4.9 M
  tokens): the King James Bible (`bible-kjv-text`, public domain), the reStructuredText sources of the
  Python 3.11 documentation (`python3.11-doc`, PSF licence), the Debian Reference (`debian-reference-en`,
  GPL-2+), the Jargon File (`jargon-text`, public domain), fortune cookies (`fortunes`, BSD / public domain).
* Synthetic in-context tasks generated on the fly (`training/mixes.py`, `MIXES`): key–value
  lookup among 2–64 distractors (15% with an absent key, answer `none`), copying a word list, "previously
  X, but now Y" overrides, format instructions before prose, and Guo et al.'s bigram-backcopy stream
  (mix `v1`); mix `v2` adds copy lists of up to 60 words and repeated prose passages (a passage, then
  `Once more:` and the passage again), which is what finally grew induction heads.
* Every 512-token window starts with `<|bos|>`; a window is prose or packed synthetic examples.

## Training (rebuild: `bash scripts/train_tiny.sh`)

| phase | command | steps | tokens | final train loss | val loss (prose) |
| --- | --- | ---: | ---: | ---: | ---: |
{chr(10).join(phases)}

AdamW (β = 0.9, 0.95), batch 8 × 512 tokens, linear warm-up then cosine decay to 10%, gradient
clipping 1.0, float32, `torch.set_num_threads(1)`, about 85 steps a minute. `train_log_phase*.jsonl` in
this folder are the logs (the run's arguments, then one JSON line per evaluation with the validation
loss, the first-token figures on 8 validation prose windows and the loss on both halves of repeated
random tokens, measured as training went).

## Measured by attnlab (`python -m training.card tiny`)

| figure | value |
| --- | --- |
| heads beyond layer 0 with mean first-token mass ≥ 0.3, built-in sample text (what `attnlab profile` shows) | **{prose_heads} of {figures['heads_beyond_layer0']}** |
| mean first-token mass by layer, sample text | {', '.join(f'{x:.3f}' for x in figures['prose_first_token_mass_by_layer'])} |
| Sink ratio Sink_1^0.3 (Gu et al.), sample text | {figures['prose_sink_ratio_percent']:.1f}% |
| heads beyond layer 0 with mean first-token mass ≥ 0.3, sample text + 12 synthetic prompts | {figures['heads_beyond_layer0_with_sink']} of {figures['heads_beyond_layer0']} |
| mean first-token mass by layer, same texts | {', '.join(f'{x:.3f}' for x in figures['first_token_mass_by_layer'])} |
| Sink ratio, same texts | {figures['sink_ratio_percent']:.1f}% |
| best induction score (repeated random tokens, 50 × 2) | {figures['best_induction']['score']} ({figures['best_induction']['head']}) |
| best previous-token score | {figures['best_previous_token']['score']} ({figures['best_previous_token']['head']}) |
| key–value recall, greedy exact match, {figures['n_per_kv_setting']} prompts each | 4 pairs: {kv['4']:.3f} · 16 pairs: {kv['16']:.3f} · 64 pairs: {kv['64']:.3f} |

## Every training attempt

Each measured with the same probes. "Prose" is the mean over queries ≥ 16 of 8 validation windows
(the training log) / the built-in sample text (the card); "card" adds the 12 synthetic prompts.

| run | setup | budget | heads ≥ 0.3 on BOS (prose val / sample / card) | induction | KV@4 |
| --- | --- | --- | --- | --- | --- |
| feasibility study | 4 × 128, KJV only, ctx 256, with / without BOS | 25 + 50 min | 0 / – / – | – | – |
| feasibility study | 70% synthetic KV/copy, 4 and 6 layers, wd 0.1 / 0.3 | 22 min | 0 / – / – | – | – |
| A | 4 × 128, 8 q / 4 kv heads of 16, ctx 512, 50% synthetic (v1), lr 3e-3, wd 0.1 | 2,250 steps | 0 / – / 1–5 | 0.015 | 0.0 |
| B → phase 1 | as A with lr 6e-3, wd 0.3 | 1,750 steps | 0 / – / 4 | 0.017 | 0.0 |
| C → phase 2 | from B, 75% synthetic (v1), lr 3e-3, wd 0.3 | +4,500 steps | 0 / 0 / 8 | 0.04 | 0.00 |
| D | fresh, 4 q / 2 kv heads of 32, 90% synthetic (v1) | 1,750 steps | 0 / – / 1 | 0.016 | 0.0 |
| copy-only probe | only the copy task (3–20 words), lr 3e-3 / 1e-3 | 600 / 3,000 steps | – | plateau (loss 3.7) | – |
| `scripts/induction_sanity.py` | fresh; `[BOS] r r` random tokens, or 30-word copy lists only | 300 steps | – | loss halves: induction | – |
| **E → phase 3 (shipped)** | from C, 60% synthetic (v2), lr 3e-3, wd 0.5 | +5,500 steps | 1 / {prose_heads} / {figures['heads_beyond_layer0_with_sink']} | {figures['best_induction']['score']} | {kv['4']:.2f} |
| F | fresh, 60% synthetic (v2), lr 6e-3, wd 0.5, run beside E | stopped at 1,500 steps, still on the plateau | 0 / – / – | – (repeat loss flat) | – |
| G | from C, 75% synthetic (v2), lr 4e-3, wd 1.0, run beside E | stopped at 2,750 steps: val loss 4.40 vs E's 3.98 at that step, no more sink heads | 0 / 3 / 4 | 0.489 | 0.11 |

In E, the repeated-token loss of the second copy fell from 11.0 to 9.0 nats within 1,000 steps
(induction), and the first prose head crossed 0.3 at step 1,500; after that the count stayed at one
(validation windows) while the loss kept falling.

## What it does not have

* **Most heads do not sink on prose.** {prose_heads} of {figures['heads_beyond_layer0']} heads beyond layer 0 put ≥ 0.3 of
  their attention on `<|bos|>` on the sample text; layers 2 and 3 almost never do. About seven CPU-hours
  of attempts (table above) moved this from 0 to {prose_heads}, not to the majority that large pre-trained models
  show. So on this model StreamingLLM's window-attention collapse does not appear (BENCHMARKS.md), and
  attnlab's strong-sink demonstrations use the `minilm` encoder (a `[CLS]` sink in layers 1–4).
* **Retrieval is partial**: key–value recall {kv['4']:.2f} at 4 pairs falls to {kv['64']:.3f} at 64 — above chance at few
  pairs and far from perfect at many, which leaves steering room to help (EVALS.md).

## Licence

Weights and tokenizer: Apache-2.0, like attnlab. The training text keeps its own licences (above); the
model reproduces none of it verbatim at any useful length.
"""
    (TINY / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
