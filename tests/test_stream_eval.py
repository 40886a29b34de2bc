"""attnlab.cache.evaluate on its own: token stream, curves, and the attention-guided modes staying bounded."""
import math

import pytest
import torch

from attnlab import AttnlabError
from attnlab.cache.evaluate import (ModeRun, resolve_modes, run_recompute, running_curve, segments, stream_ids,
                                    stream_perplexity)


def test_stream_ids_repeat_the_text_after_bos(tiny):
    _, tok = tiny
    ids = stream_ids(tok, 50, "one two three")
    unit = tok("one two three", add_special_tokens=False)["input_ids"]
    assert ids.shape == (1, 51) and int(ids[0, 0]) == tok.bos_token_id
    assert ids[0, 1:1 + 2 * len(unit)].tolist() == unit * 2
    assert stream_ids(tok, 5).shape == (1, 6)                     # bundled text by default
    with pytest.raises(AttnlabError, match="no tokens"):
        stream_ids(tok, 5, "")


def test_running_curve_and_segments_by_hand():
    nll = torch.tensor([1.0, 3.0, 2.0, 2.0])
    run = ModeRun("sink", [0, 1, 2, 3], nll, seconds=2.0, peak_rss=0)
    curve = running_curve(run, points=4)
    assert curve["tokens"] == [1, 2, 3, 4]
    assert curve["ppl"] == pytest.approx([math.e, math.exp(2), math.exp(2), math.exp(2)])
    assert [s["nll"] for s in segments(run, 2, 4)] == [2.0, 2.0]
    sparse = ModeRun("recompute", [0, 3], torch.tensor([1.0, 5.0]), 1.0, 0)
    assert [s["n"] for s in segments(sparse, 2, 4)] == [1, 1] and run.tokens_per_s == 2.0


def test_modes_are_resolved_and_checked():
    assert resolve_modes(["dense", "policy", "window", "window"], "tova") == ["dense", "tova", "window"]
    with pytest.raises(AttnlabError, match="unknown policy"):
        resolve_modes(["policy"], "fifo")


@pytest.mark.parametrize("mode, bound", [("h2o", 4 + 40), ("snapkv", 4 + 40 + 32)])
def test_attention_guided_modes_stay_bounded(tiny, mode, bound):
    model, tok = tiny
    report = stream_perplexity(model, stream_ids(tok, 160), modes=[mode], num_sink=4, window=40, policy=mode)
    entry = report["modes"][mode]
    assert entry["evaluated"] == 160 and math.isfinite(entry["ppl"])
    assert entry["cache_tokens_end"] <= bound
    assert model.config._attn_implementation == "sdpa"


def test_recompute_scores_the_last_token_of_a_fresh_window_forward(tiny):
    """Each recompute NLL is the cross-entropy of a plain full-logits forward of the last ``size`` tokens."""
    model, tok = tiny
    ids = stream_ids(tok, 90)
    run = run_recompute(model, ids, size=32, n_tokens=90, every=20)
    assert run.positions == [0, 20, 40, 60, 80]
    with torch.no_grad():
        for i, t in enumerate(run.positions):
            window = ids[:, max(0, t + 1 - 32):t + 1]
            logits = model(window, use_cache=False).logits[0, -1].float()
            expected = -torch.log_softmax(logits, -1)[ids[0, t + 1]]
            assert float(run.nll[i]) == pytest.approx(float(expected), abs=1e-4)
