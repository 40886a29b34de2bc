"""Can the tiny architecture learn induction (copying) on a given data format? A few-minute check.

    python scripts/induction_sanity.py random --vocab 120     # [BOS] r r, 32 random tokens: loss on r -> 0
    python scripts/induction_sanity.py words --words 30       # "Copy: w1 … w30\\nAgain: w1 … w30 end"
    python scripts/induction_sanity.py words --words-min 3 --words-max 20 --batch 8 --len 256 --lr 3e-3

Trains a fresh model of the bundled ``tiny``'s shape (4 layers × 128, 8 q / 4 kv heads) and prints the
training loss every 100 steps. With induction, the loss falls to about half (the repeated half becomes
free); on the plateau it stays near the unigram entropy.
"""
from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from attnlab.models.loading import TINY_PATH
from attnlab.models.synthetic import copy_words


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", choices=["random", "words"])
    p.add_argument("--vocab", type=int, default=120, help="random: token vocabulary")
    p.add_argument("--words", type=int, default=0, help="words: fixed list length (0 = random in min..max)")
    p.add_argument("--words-min", type=int, default=3)
    p.add_argument("--words-max", type=int, default=20)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--len", type=int, default=256, help="words: tokens per packed window")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(TINY_PATH)
    vocab = args.vocab + 1 if args.data == "random" else len(tok)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
                                         tie_word_embeddings=True))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    rng = random.Random(0)

    def window() -> list[int]:
        ids = [tok.bos_token_id]
        while len(ids) < args.len:
            n = args.words or rng.randrange(args.words_min, args.words_max + 1)
            ex = copy_words(rng, n)
            ids += tok(ex["prompt"] + ex["answer"] + "\n\n", add_special_tokens=False)["input_ids"]
        return ids[:args.len]

    start = time.time()
    for step in range(1, args.steps + 1):
        if args.data == "random":
            r = torch.randint(1, vocab, (args.batch, 32))
            batch = torch.cat([torch.zeros(args.batch, 1, dtype=torch.long), r, r], dim=1)
        else:
            batch = torch.tensor([window() for _ in range(args.batch)])
        loss = model(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            print(f"step {step}  loss {loss.item():.3f}  {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
