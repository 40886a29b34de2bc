"""Steering overhead: prefill latency, peak prefill memory and decode tokens/s (one token per forward with the KV cache, as generate runs), in one run, for

* ``sdpa``     -- the model unsteered (plain SDPA, transformers' default);
* ``attnlab``  -- PASTA on 50% of the heads through attnlab (bias folded into SDPA as a q/k channel);
* ``float-mask`` -- the official PASTA approach: eager attention with the 4-D mask expanded to every
  head and ``log alpha`` added to the steered heads' columns (a ``[B, H, q, k]`` float tensor per layer).

Model: SmolLM2-135M-Instruct by default (``--model``: any attnlab model name; ``tiny`` runs with its position
limit lifted). A prompt never exceeds the model's positions minus ``--new-tokens``. Each case runs in a fresh
subprocess; the methods are interleaved, repeat by repeat, so drifts of the machine hit them alike.

    python benchmarks/steer_overhead.py [--model smollm2] [--lengths 512 2048 8192] [--new-tokens 32] [--threads 1]
    python benchmarks/steer_overhead.py --device cuda --dtype float16     # on a GPU: is SDPA still on a fused kernel?

On a GPU, memory is the CUDA allocator's peak during prefill (above what the model holds before it) and each
time is taken after ``torch.cuda.synchronize()``; on the CPU, memory is the process's resident-memory growth.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

from measure import SAMPLE_EVERY, load_model

from attnlab.report.memory import PeakRSS

ALPHA = 0.01


def half_the_heads(shape) -> str:
    """The first half of every layer's heads (a :class:`attnlab.ModelShape`), as a HeadSet spec (PASTA on 50%)."""
    half = shape.n_heads // 2
    return ",".join(f"L{l}H0-{half - 1}" for l in range(shape.n_layers))


def prompt_of(tok, length: int) -> tuple[str, str]:
    from attnlab.profile import sample_text

    unit = sample_text() + "\n"
    text = unit * (length // len(tok(unit)["input_ids"]) + 2)
    ids = tok(text)["input_ids"][: length]
    text = tok.decode(ids[1:])
    return text, "wrote the weather in his book"


def float_mask_attention(plan):
    """The official PASTA route: eager attention, mask expanded to [B, H, q, k] + log alpha on steered heads."""
    from transformers.models.llama.modeling_llama import eager_attention_forward

    def fn(module, query, key, value, attention_mask, **kwargs):
        b, h, q, _ = query.shape
        k = key.shape[2]
        like = {"dtype": query.dtype, "device": query.device}
        lowest = torch.finfo(query.dtype).min
        if attention_mask is None:
            causal = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)
            base = torch.zeros(b, 1, q, k, **like).masked_fill(~causal, lowest)
        else:
            base = attention_mask if attention_mask.dtype != torch.bool else torch.zeros(
                attention_mask.shape, **like).masked_fill(~attention_mask, lowest)
        mask = base.expand(b, h, q, k).clone()
        for head in plan["heads"].get(module.layer_idx, []):
            mask[:, head, :, : plan["prompt_len"]] += plan["bias"].to(**like)[:, None, :]
        return eager_attention_forward(module, query, key, value, mask, **kwargs)
    return fn


def flex_attention_fn(plan):
    """FlexAttention with a ``score_mod`` adding PASTA's per-(head, key) bias; compiled once per length."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    cache = {}

    def fn(module, query, key, value, attention_mask, scaling=None, **kwargs):
        q_len, k_len = query.shape[2], key.shape[2]
        bias = torch.zeros(query.shape[1], k_len, dtype=query.dtype, device=query.device)
        for head in plan["heads"].get(module.layer_idx, []):
            bias[head, : plan["prompt_len"]] = plan["bias"][0]
        if (q_len, k_len) not in cache:
            cache[(q_len, k_len)] = create_block_mask(lambda b, h, qi, ki: qi + (k_len - q_len) >= ki, None, None,
                                                      q_len, k_len, device=query.device)

        def score_mod(score, b, h, qi, ki):
            return score + bias[h, ki]
        out = compiled(query, key, value, score_mod=score_mod, block_mask=cache[(q_len, k_len)], scale=scaling,
                       enable_gqa=query.shape[1] != key.shape[1])
        return out.transpose(1, 2).contiguous(), None
    return fn


class CudaPeak:
    """``with CudaPeak(device) as p: ...``; ``p.peak``: the CUDA allocator's peak during the block, above its start."""

    def __init__(self, device) -> None:
        self.device = device

    def __enter__(self):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base, self.peak = torch.cuda.memory_allocated(self.device), 0
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device) - self.base


def one_case(model_name: str, method: str, length: int, new_tokens: int, threads: int, device: str = "cpu",
             dtype: str = "float32") -> dict:
    global torch
    import torch
    from transformers import AttentionInterface

    import attnlab
    from attnlab.models.config import ModelShape
    from attnlab.spans import HeadSet, Spans

    torch.set_num_threads(threads)
    model, tok = load_model(model_name, length + new_tokens, device, dtype)
    model.to(device=device, dtype=getattr(torch, dtype))
    on_gpu = torch.device(device).type == "cuda"
    shape = ModelShape.of(model)
    length = min(length, shape.max_positions - new_tokens)
    heads = half_the_heads(shape)
    text, span = prompt_of(tok, length)
    enc = tok(text, return_tensors="pt").to(device)
    if method in ("float-mask", "flex"):
        inputs = Spans.encode(tok, [text], {"e": span})
        bias = torch.where(inputs.masks["e"][0], 0.0, math.log(ALPHA))[None]
        by_layer = {}
        for l, h in HeadSet.parse(heads, shape.n_layers, shape.n_heads):
            by_layer.setdefault(l, []).append(h)
        plan = {"heads": by_layer, "prompt_len": enc["input_ids"].shape[1], "bias": bias}
        AttentionInterface.register("pasta_float_mask", float_mask_attention(plan))
        AttentionInterface.register("pasta_flex", flex_attention_fn(plan))
        model.set_attn_implementation("pasta_float_mask" if method == "float-mask" else "pasta_flex")

    def prefill():
        return model(**enc, use_cache=True, logits_to_keep=1)  # as generate does

    def decode(out, steps: int):
        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        mask = enc["attention_mask"]
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            out = model(input_ids=nxt, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)

    def sync():
        if on_gpu:
            torch.cuda.synchronize(device)

    def peak_memory():
        return CudaPeak(device) if on_gpu else PeakRSS(SAMPLE_EVERY)

    def timed():
        with peak_memory() as sampler:
            sync()
            start = time.perf_counter()
            out = prefill()
            sync()
            prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        decode(out, new_tokens)
        sync()
        return prefill_s, sampler.peak, time.perf_counter() - start

    short = tok(text[:80], return_tensors="pt").to(device)
    with torch.no_grad():
        if method == "attnlab":
            with attnlab.steer(model, attnlab.PASTA(text[:20], heads=heads, alpha=ALPHA), tokenizer=tok):
                model(**short)  # warm-up on a short prompt, so the measured peak is the long prompt's own
            with attnlab.steer(model, attnlab.PASTA(span, heads=heads, alpha=ALPHA), tokenizer=tok):
                prefill_s, peak, decode_s = timed()
        elif method == "flex":
            # prefill only: the compiled kernel is specialised to (q, k) lengths, so every decode step would
            # recompile; the first call (compilation) is timed apart
            start = time.perf_counter()
            prefill()
            sync()
            compile_s = time.perf_counter() - start
            with peak_memory() as sampler:
                start = time.perf_counter()
                prefill()
                sync()
                prefill_s = time.perf_counter() - start
            return {"method": method, "tokens": int(enc["input_ids"].shape[1]), "prefill_s": prefill_s,
                    "prefill_peak_mib": sampler.peak / 2 ** 20, "decode_tok_s": float("nan"), "compile_s": compile_s}
        else:
            if method == "float-mask":
                model.set_attn_implementation("sdpa")
            model(**short)
            if method == "float-mask":
                model.set_attn_implementation("pasta_float_mask")
            prefill_s, peak, decode_s = timed()
    return {"method": method, "tokens": int(enc["input_ids"].shape[1]), "prefill_s": prefill_s,
            "prefill_peak_mib": peak / 2 ** 20, "decode_tok_s": new_tokens / decode_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2", help="attnlab model name (tiny: positions lifted), or shape:smollm2 / "
                   "shape:llama3-8b (random weights of that shape, for timing where the weights are not at hand)")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="fresh runs per case; the median is reported")
    p.add_argument("--methods", default="sdpa,attnlab,float-mask", help="comma list of sdpa, attnlab, float-mask "
                   "(the float mask is slow and n^2 in memory at long prompts)")
    p.add_argument("--flex", action="store_true", help="also FlexAttention with a score_mod (prefill only; compiles)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (a GPU needs a CUDA build of torch)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(one_case(args.model, args.case[0], int(args.case[1]), args.new_tokens, args.threads,
                                  args.device, args.dtype)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"steering overhead: PASTA on 50% of the heads ({args.model}, {args.device}, {args.dtype}, "
                        f"{args.threads} thread(s), median of {args.repeats})")
    for col in ("tokens", "method", "prefill s", "prefill peak MiB", "decode tok/s", "tok/s vs sdpa",
                "peak vs sdpa"):
        table.add_column(col, justify="right")
    rows = []
    for length in args.lengths:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if methods[:1] != ["sdpa"] or not set(methods) <= {"sdpa", "attnlab", "float-mask"}:
            raise SystemExit("--methods: sdpa first (the baseline), then attnlab and/or float-mask")
        runs = {m: [] for m in methods + (["flex"] if args.flex else [])}
        for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every method alike
            for method in runs:
                out = subprocess.run([sys.executable, __file__, "--model", args.model, "--case", method, str(length),
                                      "--new-tokens", str(args.new_tokens), "--threads", str(args.threads),
                                      "--device", args.device, "--dtype", args.dtype], capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{method} at {length} failed: {out.stderr.strip().splitlines()[-1]}")
                runs[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
        base = None
        for method, results in runs.items():
            r = {k: statistics.median(x[k] for x in results) if k != "method" else method for k in results[0]}
            if method == "flex":
                method = f"flex (+{r['compile_s']:.0f}s compile)"
            rows.append(r)
            base = r if method == "sdpa" else base
            table.add_row(str(int(r["tokens"])), method, f"{r['prefill_s']:.3f}", f"{r['prefill_peak_mib']:.0f}",
                          f"{r['decode_tok_s']:.1f}" if r["decode_tok_s"] == r["decode_tok_s"] else "n/a",
                          f"{r['decode_tok_s'] / base['decode_tok_s']:.2f}x",
                          f"{r['prefill_peak_mib'] / max(base['prefill_peak_mib'], 1e-9):.2f}x")
    Console(width=160).print(table)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
