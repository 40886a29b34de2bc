"""Train and test tasks that never share a prompt: settings are chosen on the train task, measured on the test.

Generated tasks draw the train examples with another seed (``seed + 1000``) and drop any train example
whose prompt is also a test prompt (tasks drawn from a fixed pool of items, ``classify`` and ``choice``, can
draw the same item under both seeds); a JSONL file is shuffled once by ``seed``, its first quarter is the
train split and the test split is the next ``n`` records.
"""
from __future__ import annotations

from attnlab.errors import AttnlabError
from attnlab.evals.tasks import Task, make_task

TRAIN_SEED_OFFSET = 1000


def train_and_test(name: str, tokenizer, n: int, seed: int = 0, max_tokens: int | None = None,
                   train_n: int | None = None, **params) -> tuple[Task | None, Task]:
    """``(train, test)``: the test task of at most ``n`` examples and, when ``train_n`` is given, a disjoint
    train task (``train_n`` generated examples, or the first quarter of a JSONL file)."""
    if name != "jsonl" or train_n is None:
        test = make_task(name, tokenizer, n, seed, max_tokens, **params)
        if train_n is None:
            return None, test
        drawn = make_task(name, tokenizer, train_n, seed + TRAIN_SEED_OFFSET, max_tokens, **params)
        tested = {e.prompt for e in test.examples}
        train = Task(drawn.name, [e for e in drawn.examples if e.prompt not in tested], drawn.scorer, drawn.params,
                     drawn.encoder, drawn.chat)
        if not train.examples:
            raise AttnlabError(f"every train example of task '{name}' is also a test prompt: use a smaller --n so "
                               "some of the task's items are left to choose settings on")
        train.params = {**train.params, "n": len(train.examples)}
        return train, test
    records = make_task(name, tokenizer, None, seed, max_tokens, **params)
    if len(records.examples) < 2:
        raise AttnlabError(f"{params.get('path')} holds one record: choosing settings needs at least two (the first "
                           "quarter trains, the rest tests)")
    cut = max(1, len(records.examples) // 4)
    return _part(records, 0, cut, "train"), _part(records, cut, cut + n, "test")


def _part(task: Task, start: int, stop: int, split: str) -> Task:
    examples = task.examples[start:stop]
    return Task(task.name, examples, task.scorer, {**task.params, "n": len(examples), "split": split}, task.encoder)
