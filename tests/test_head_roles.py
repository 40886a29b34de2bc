"""Induction and previous-token scores against the diagonal of eager attention maps."""
import torch

from archs import build
from attnlab.heads.roles import head_role_scores, repeated_random_tokens


def test_scores_equal_eager_diagonals(tiny):
    tok = tiny[1]
    model = build("llama", len(tok))
    length = 12
    scores = head_role_scores(model, tok, length=length, batch=3, seed=1)
    ids = repeated_random_tokens(tok, length, 3, seed=1)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        maps = torch.stack(model(ids, output_attentions=True).attentions)  # [L, B, H, n, n]
    model.set_attn_implementation("sdpa")
    n = ids.shape[1]
    induction = torch.stack([maps[..., i, i - (length - 1)] for i in range(length + 1, n)], -1).mean((-1, 1))
    previous = torch.stack([maps[..., i, i - 1] for i in range(1, n)], -1).mean((-1, 1))
    assert (scores["induction"] - induction).abs().max() <= 1e-5
    assert (scores["previous_token"] - previous).abs().max() <= 1e-5


def test_sequence_is_repeated():
    class Tok:
        all_special_ids = [0]
        bos_token_id = 0

        def __len__(self):
            return 50
    ids = repeated_random_tokens(Tok(), 7, 2)
    assert ids.shape == (2, 15) and (ids[:, 1:8] == ids[:, 8:]).all() and (ids[:, 0] == 0).all()
