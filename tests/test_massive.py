"""Massive activations (Sun et al. 2024): hand-made states, and the hooks against output_hidden_states."""
import torch

from attnlab.probes.massive import massive_activation_hooks, summarize_state


def test_summarize_flags_only_massive_values():
    state = torch.ones(1, 5, 8) * 0.01
    state[0, 0, 3] = -500.0      # > 100 and >= 1000 x median (0.01): massive
    state[0, 2, 1] = 50.0        # large but under 100: not massive
    valid = torch.ones(1, 5, dtype=torch.bool)
    row = summarize_state(state, valid)[0]
    assert row["top"][0] == {"value": 500.0, "token": 0, "dim": 3}
    assert row["massive"] == [{"value": 500.0, "token": 0, "dim": 3}]
    assert abs(row["median"] - 0.01) < 1e-6


def test_padding_is_ignored():
    state = torch.ones(1, 4, 2)
    state[0, 0, 0] = 1e6          # a padding position
    valid = torch.tensor([[False, True, True, True]])
    row = summarize_state(state, valid)[0]
    assert row["massive"] == [] and row["top"][0]["value"] == 1.0 and row["top"][0]["token"] in (1, 2, 3)


def test_hooks_match_output_hidden_states(tiny):
    model, tok = tiny
    enc = tok("The sea was calm and the light burned all night.", return_tensors="pt")
    valid = enc["attention_mask"].bool()
    with torch.no_grad(), massive_activation_hooks(model.model, valid) as found:
        out = model.model(**enc, output_hidden_states=True)
    for layer in range(len(found) - 1):  # the last hidden state returned is after the final norm
        ref = out.hidden_states[layer + 1][0].abs()
        assert abs(found[layer][0]["top"][0]["value"] - float(ref.max())) < 1e-3
        assert abs(found[layer][0]["median"] - float(ref.median())) < 1e-4
