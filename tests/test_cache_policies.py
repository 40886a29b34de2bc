"""Eviction selector and policy scorers on hand-made tensors (no model)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab import AttnlabError
from attnlab.cache import H2O, TOVA, SnapKV, StreamingLLM, group_heads, keep_indices


def reference_keep(scores, num_sink, recent, capacity):
    """Plain-Python selector: protected tokens + the best others (earlier token wins ties)."""
    n = len(scores)
    if n <= capacity:
        return list(range(n))
    protected = [i for i in range(n) if i < num_sink or i >= n - recent]
    others = sorted((i for i in range(n) if i not in protected), key=lambda i: (-scores[i], i))
    return sorted(protected + others[:capacity - len(protected)])


def test_selector_keeps_sinks_recent_and_top_scores():
    scores = torch.tensor([[[0.0, 0.0, 9.0, 1.0, 8.0, 2.0, 7.0, 0.5, 0.1, 0.2]]])
    keep = keep_indices(scores, num_sink=2, recent=2, capacity=7)
    assert keep.tolist() == [[[0, 1, 2, 4, 6, 8, 9]]]


def test_selector_is_per_head_and_per_row():
    scores = torch.tensor([[[5.0, 1, 0, 3, 0, 0], [5.0, 0, 3, 1, 0, 0]],
                           [[5.0, 0, 0, 0, 9, 0], [5.0, 9, 0, 0, 0, 0]]])
    keep = keep_indices(scores, num_sink=1, recent=1, capacity=3)
    assert keep.tolist() == [[[0, 3, 5], [0, 2, 5]], [[0, 4, 5], [0, 1, 5]]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.integers(0, 4), st.integers(0, 6), st.integers(1, 12))
def test_selector_matches_reference(values, num_sink, recent, capacity):
    if num_sink + recent > capacity:
        return
    scores = torch.tensor(values, dtype=torch.float32)[None, None]
    assert keep_indices(scores, num_sink, recent, capacity)[0, 0].tolist() == \
        reference_keep(values, num_sink, recent, capacity)


def test_selector_refuses_budget_smaller_than_protected():
    with pytest.raises(AttnlabError, match="exceed"):
        keep_indices(torch.zeros(1, 1, 20), num_sink=4, recent=8, capacity=10)


def test_gqa_aggregation_mean_and_max():
    # 4 query heads onto 2 KV heads: heads (0, 1) -> KV 0, heads (2, 3) -> KV 1
    scores = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [2.0, 0.0]]])
    assert group_heads(scores, 2, "mean").tolist() == [[[2.0, 1.0], [1.0, 2.0]]]
    assert group_heads(scores, 2, "max").tolist() == [[[3.0, 2.0], [2.0, 4.0]]]
    with pytest.raises(AttnlabError):
        group_heads(scores, 3)


def test_h2o_accumulates_attention_received_per_kv_group():
    policy = H2O()
    probs = torch.zeros(1, 4, 2, 3)
    probs[0, 0, :, 0] = 1.0          # head 0 (KV 0): both queries on key 0
    probs[0, 1, :, 1] = 1.0          # head 1 (KV 0): on key 1
    probs[0, 2:, :, 2] = 1.0         # heads 2, 3 (KV 1): on key 2
    scores = policy.observe(None, 0, 2, probs, n_kv=2)
    assert scores.tolist() == [[[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]]]
    scores = policy.extend(scores, 1)
    step = torch.zeros(1, 4, 1, 4)
    step[..., 3] = 1.0
    scores = policy.observe(scores, 0, 1, step, n_kv=2)
    assert scores.tolist() == [[[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 2.0, 1.0]]]


def test_tova_uses_only_the_last_query_row_averaged_over_all_heads():
    policy = TOVA()
    probs = torch.zeros(1, 2, 3, 3)
    probs[:, :, :2, 0] = 1.0                          # earlier rows ignored
    probs[0, 0, 2] = torch.tensor([0.0, 1.0, 0.0])
    probs[0, 1, 2] = torch.tensor([0.0, 0.0, 1.0])
    assert policy.observe(None, 0, 3, probs[:, :, :2], n_kv=1) is None          # chunk without the last row
    scores = policy.observe(None, 2, 3, probs[:, :, 2:], n_kv=1)
    assert scores.tolist() == [[[0.0, 0.5, 0.5]]]


def test_snapkv_votes_from_observation_window_then_pools():
    policy = SnapKV(window_size=2, kernel_size=3, pooling="max")
    probs = torch.zeros(1, 1, 4, 8)
    probs[0, 0, :2, 1] = 1.0                           # outside the observation window: ignored
    probs[0, 0, 2:, 3] = 1.0
    scores = policy.observe(None, 0, 4, probs, n_kv=1)
    assert scores[0, 0, 3] == 2.0 and scores[0, 0, 1] == 0.0
    pooled = policy.scores_for_selection(scores, 1, 8, "cpu")
    assert pooled[0, 0, :6].tolist() == [0.0, 0.0, 2.0, 2.0, 2.0, 0.0]          # neighbours of key 3 share its vote
    assert not policy.due(10, 8, last_q_len=1) and policy.due(10, 8, last_q_len=4)


def test_streamingllm_keeps_first_and_last():
    policy = StreamingLLM()
    keep = policy.select(None, 1, 10, num_sink=2, recent=policy.protected_recent(4), capacity=6, device="cpu")
    assert keep.tolist() == [[[0, 1, 6, 7, 8, 9]]]
