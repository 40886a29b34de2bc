"""Train the bundled ``tiny`` model: a small Llama-architecture causal LM with a byte-level BPE tokenizer.

Data: English prose from Debian packages (``scripts/build_corpus.py``) mixed with the synthetic
in-context tasks of ``training/mixes.py``. Every training window starts with ``<|bos|>``
(Barbero et al. 2025 and Gu et al. 2025 tie first-token sinks to an always-present first token).

The shipped checkpoint is three runs of this module (phases 1 and 2 with task mix ``v1``, phase 3 with
``v2``, each resuming the previous with ``--init``); rebuild it with one command,
``bash scripts/train_tiny.sh``, whose arguments are also listed in ``src/attnlab/models/tiny/README.md``.

The log (the run's arguments, then one JSON line per evaluation with the validation loss, the sink
figures and the repeated-token losses measured as training goes) is written to ``OUT/train_log.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import torch

from attnlab.models.synthetic import WORDS
from training.mixes import MIXES, sample_example

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>"]


def train_tokenizer(corpus: str, vocab_size: int, seed: int, mix: str):
    """A byte-level BPE tokenizer that prepends ``<|bos|>`` to every encoded text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    synthetic = [sample_example(rng, lambda n: "", mix) for _ in range(20000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([corpus[i:i + 100_000] for i in range(0, len(corpus), 100_000)] + synthetic
                            + [" ".join(WORDS)] * 50, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A $B", special_tokens=[("<|bos|>", tok.token_to_id("<|bos|>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>", model_max_length=512)
    return fast


class Batches:
    """Windows of ``seq_len`` tokens, each ``<|bos|>`` + prose or + packed synthetic examples."""

    def __init__(self, corpus: str, tokenizer, seq_len: int, synth_fraction: float, seed: int, mix: str):
        self.tok, self.seq_len, self.synth_fraction, self.mix = tokenizer, seq_len, synth_fraction, mix
        self.rng = random.Random(seed)
        docs = corpus.split("\n<|doc|>\n")
        self.rng.shuffle(docs)
        n_val = max(1, len(docs) // 50)
        self.val_docs, train_docs = docs[:n_val], docs[n_val:]
        self.text = "\n\n".join(train_docs)
        eos = tokenizer.eos_token_id
        ids: list[int] = []
        for enc in tokenizer(train_docs, add_special_tokens=False)["input_ids"]:
            ids += enc + [eos]
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.bos = tokenizer.bos_token_id

    def filler(self, n_chars: int) -> str:
        start = self.rng.randrange(0, len(self.text) - n_chars)
        return self.text[start:start + n_chars]

    def window(self) -> torch.Tensor:
        n = self.seq_len - 1
        if self.rng.random() < self.synth_fraction:
            ids: list[int] = []
            while len(ids) < n:
                ex = sample_example(self.rng, self.filler, self.mix)
                ids += self.tok(ex + "\n\n", add_special_tokens=False)["input_ids"]
            body = torch.tensor(ids[:n])
        else:
            start = self.rng.randrange(0, len(self.ids) - n)
            body = self.ids[start:start + n]
        return torch.cat([torch.tensor([self.bos]), body])

    def batch(self, size: int) -> torch.Tensor:
        return torch.stack([self.window() for _ in range(size)])


@torch.no_grad()
def sink_figures(model, windows: torch.Tensor, min_query: int = 16) -> dict:
    """Mean attention on position 0 per head (queries >= ``min_query``), via eager attention maps."""
    model.set_attn_implementation("eager")
    out = model(windows, output_attentions=True)
    model.set_attn_implementation("sdpa")
    mass = torch.stack([a[:, :, min_query:, 0].mean(dim=(0, 2)) for a in out.attentions])  # [L, H]
    beyond0 = mass[1:]
    return {"first_token_mass_by_layer": [round(x, 4) for x in mass.mean(1).tolist()],
            "heads_beyond_layer0_ge_0.3": int((beyond0 >= 0.3).sum()), "heads_beyond_layer0": beyond0.numel(),
            "max_head_mass": round(float(mass.max()), 4)}


@torch.no_grad()
def repeat_losses(model, vocab_size: int, bos: int, length: int = 50, n: int = 8) -> dict:
    """Loss on the first and the second copy of ``[BOS] r r`` (random tokens): the gap is what induction buys."""
    g = torch.Generator().manual_seed(0)
    r = torch.randint(16, vocab_size, (n, length), generator=g)
    ids = torch.cat([torch.full((n, 1), bos), r, r], dim=1)
    logp = model(ids).logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    return {"repeat_loss_first": round(float(-logp[:, :length].mean()), 3),
            "repeat_loss_second": round(float(-logp[:, length + 1:].mean()), 3)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--minutes", type=float, default=0, help="stop early after this wall time (0 = no cap)")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop after this step while the schedule runs as if to --steps (0 = run to --steps)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--inter", type=int, default=384)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--synth", type=float, default=0.5, help="fraction of windows made of synthetic tasks")
    p.add_argument("--mix", default="v2", choices=sorted(MIXES), help="synthetic task mix (see training/mixes.py)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--init", help="resume from this checkpoint folder (weights and tokenizer)")
    args = p.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus).read_text(encoding="utf-8")
    if args.init:
        tokenizer = AutoTokenizer.from_pretrained(args.init)
        model = LlamaForCausalLM.from_pretrained(args.init, attn_implementation="sdpa")
    else:
        tokenizer = train_tokenizer(corpus, args.vocab, args.seed, args.mix)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.inter,
            num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
            max_position_embeddings=args.seq_len, rope_theta=10000.0, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa")
        model = LlamaForCausalLM(config)
    data = Batches(corpus, tokenizer, args.seq_len, args.synth, args.seed, args.mix)
    val_prose = tokenizer(["\n".join(d.splitlines()[:400]) for d in data.val_docs[:64]], add_special_tokens=True,
                          truncation=True, max_length=args.seq_len)["input_ids"]
    val_prose = torch.tensor([v for v in val_prose if len(v) == args.seq_len][:16])
    decay = [p_ for n, p_ in model.named_parameters() if p_.dim() >= 2]
    no_decay = [p_ for n, p_ in model.named_parameters() if p_.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    log = open(out / "train_log.jsonl", "a")
    log.write(json.dumps({"args": vars(args), "params": sum(p_.numel() for p_ in model.parameters()),
                          "train_tokens_prose": len(data.ids)}) + "\n")
    start, tokens = time.time(), 0
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = data.batch(args.batch)
        loss = model(batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += batch.numel()
        done = (args.minutes and (time.time() - start) > args.minutes * 60) or step == args.stop_after
        if step % args.eval_every == 0 or step == args.steps or done:
            model.eval()
            with torch.no_grad():
                val_loss = float(model(val_prose, labels=val_prose).loss)
            record = {"step": step, "tokens": tokens, "minutes": round((time.time() - start) / 60, 1),
                      "lr": lr, "train_loss": round(float(loss), 4), "val_prose_loss": round(val_loss, 4),
                      **sink_figures(model, val_prose[:8]),
                      **repeat_losses(model, len(tokenizer), tokenizer.bos_token_id)}
            model.train()
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(json.dumps(record), flush=True)
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
        if done:
            break


if __name__ == "__main__":
    main()
