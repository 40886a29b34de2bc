"""Score answers under a (steered) model exactly as generation would see them.

The prompt is run first (left-padded, with a KV cache), then the answer tokens as a continuation, so a
steering method treats the answer as *generated* tokens -- the same as during ``model.generate`` --
while one extra forward scores every answer token at once (teacher forcing). Used by head selection
(:mod:`attnlab.steer.selection`) and by the evaluation harness.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from attnlab.batching import pad_rows, position_ids
from attnlab.errors import AttnlabError


@dataclass
class AnswerScores:
    """Per example: answer log-likelihood (sum over its tokens), greedy exact match, first-token entropy."""

    logprob: torch.Tensor
    correct: torch.Tensor
    entropy: torch.Tensor
    n_tokens: torch.Tensor


def _batch(tokenizer, prompts, answers):
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    answer_ids = [tokenizer(p + a)["input_ids"][len(pi):] for p, a, pi in zip(prompts, answers, prompt_ids)]
    for i, (p, a, ai) in enumerate(zip(prompts, answers, answer_ids)):
        if not ai:
            raise AttnlabError(f"answer {i + 1} ({a!r}) adds no token to its prompt: give a non-empty answer")
    p_ids, p_mask = pad_rows(prompt_ids, tokenizer.pad_token_id, left=True)
    a_ids, a_mask = pad_rows(answer_ids, tokenizer.pad_token_id, left=False)
    return p_ids, p_mask, a_ids, a_mask


@torch.no_grad()
def score_answers(model, tokenizer, prompts: list[str], answers: list[str], steer=None,
                  batch_size: int = 16) -> AnswerScores:
    """Score ``answers`` after ``prompts``; ``steer(batch_indices)`` returns a context manager (or None).

    Greedy exact match means every answer token is the argmax given the tokens before it, i.e. greedy
    decoding would produce the answer.
    """
    from transformers import DynamicCache

    if len(prompts) != len(answers):
        raise AttnlabError(f"{len(prompts)} prompts but {len(answers)} answers")
    device = next(model.parameters()).device
    out = {k: [] for k in ("logprob", "correct", "entropy", "n_tokens")}
    for s in range(0, len(prompts), batch_size):
        idx = list(range(s, min(len(prompts), s + batch_size)))
        p_ids, p_mask, a_ids, a_mask = _batch(tokenizer, [prompts[i] for i in idx], [answers[i] for i in idx])
        context = steer(idx) if steer is not None else None
        if context is not None:
            context.__enter__()
        try:
            pos = position_ids(p_mask)
            first = model(input_ids=p_ids.to(device), attention_mask=p_mask.to(device), position_ids=pos.to(device),
                          past_key_values=DynamicCache(), use_cache=True)
            full_mask = torch.cat([p_mask, a_mask], dim=1)
            a_pos = pos[:, -1:] + torch.arange(1, a_ids.shape[1] + 1)[None]
            rest = model(input_ids=a_ids.to(device), attention_mask=full_mask.to(device),
                         position_ids=a_pos.to(device), past_key_values=first.past_key_values, use_cache=True)
        finally:
            if context is not None:
                context.__exit__(None, None, None)
        logits = torch.cat([first.logits[:, -1:], rest.logits[:, :-1]], dim=1).float()      # predicts a_ids
        logp = torch.log_softmax(logits, dim=-1)
        token_lp = logp.gather(-1, a_ids.to(device)[..., None]).squeeze(-1).cpu() * a_mask
        hit = ((logits.argmax(-1).cpu() == a_ids) | (a_mask == 0)).all(dim=1)
        probs0 = logp[:, 0].exp()
        out["logprob"].append(token_lp.sum(1))
        out["correct"].append(hit)
        out["entropy"].append(-(probs0 * logp[:, 0]).sum(-1).cpu())
        out["n_tokens"].append(a_mask.sum(1))
    return AnswerScores(**{k: torch.cat(v) for k, v in out.items()})
