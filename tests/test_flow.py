"""Attention rollout and attention flow (Abnar & Zuidema, ACL 2020): against eager maps, a hand-built graph,
brute-force minimum cuts and networkx; length limits and bad input are one line; the command writes JSON + PNG."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import attnlab
from attnlab.cli import app
from attnlab.collect import encode
from attnlab.errors import AttnlabError
from attnlab.flow import max_flows, residual_attention
from attnlab.models.config import ModelShape

TEXT = "The cat sat on the mat, and the dog watched it."
runner = CliRunner()


def _eager_maps(model, tok, text):
    """Head-averaged eager attention maps ``[L, n, n]`` in float64: an independent computation of ``W^l``."""
    enc = encode(tok, [text], ModelShape.of(model))
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    return np.stack([a[0].double().mean(0).numpy() for a in out.attentions])


def _rollout_by_hand(maps, residual):
    n = maps.shape[-1]
    product = np.eye(n)
    for w in maps:
        a = residual * np.eye(n) + (1 - residual) * w
        product = (a / a.sum(1, keepdims=True)) @ product
    return product


@pytest.mark.parametrize("residual", [0.5, 0.2])
def test_rollout_equals_eager_product(tiny, residual):
    model, tok = tiny
    result = attnlab.flow(model, tok, TEXT, residual=residual)
    expected = _rollout_by_hand(_eager_maps(model, tok, TEXT), residual)
    assert result.relevance.shape == expected.shape == (len(result.tokens), len(result.tokens))
    np.testing.assert_allclose(result.relevance, expected, atol=1e-5)
    np.testing.assert_allclose(result.relevance.sum(1), 1.0, atol=1e-9)
    assert np.all(np.triu(result.relevance, 1) == 0)                      # causal: no relevance from the future


def test_exclude_sink_gives_the_first_token_nothing(tiny):
    model, tok = tiny
    plain = attnlab.flow(model, tok, TEXT)
    result = attnlab.flow(model, tok, TEXT, exclude_sink=True)
    assert plain.relevance[1:, 0].min() > 0.3                             # tiny's heads sink on <|bos|>
    assert np.all(result.relevance[1:, 0] == 0)
    np.testing.assert_allclose(result.relevance.sum(1), 1.0, atol=1e-9)
    flows = attnlab.flow(model, tok, TEXT, method="maxflow", exclude_sink=True, position=[3, -1])
    assert np.all(flows.max_flow[:, 0] == 0)


def test_max_flow_on_a_hand_built_graph():
    """Two layers, two tokens. From output 1: to input 0 along (2,1)->(1,0)->(0,0) at 0.3 and (2,1)->(1,1)->(0,0)
    at 0.5, so 0.8; to input 1 only along (2,1)->(1,1)->(0,1), min(0.7, 0.5) = 0.5. Output 0 sees only itself."""
    adjusted = np.array([[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.3, 0.7]]])
    np.testing.assert_allclose(max_flows(adjusted, [1, 0]), [[0.8, 0.5], [1.0, 0.0]], atol=1e-9)


def _min_cuts_by_brute_force(adjusted, position):
    """Per input token, the minimum over every cut of the layered graph separating output ``position`` from it: the
    max-flow value, by max-flow min-cut. Each subset of the other nodes is tried as the source side."""
    n_layers, n, _ = adjusted.shape
    nodes = (n_layers + 1) * n
    capacity = np.zeros((nodes, nodes), dtype=np.float32)
    for layer in range(1, n_layers + 1):
        capacity[layer * n:(layer + 1) * n, (layer - 1) * n:layer * n] = adjusted[layer - 1]
    source = n_layers * n + position
    free = [v for v in range(nodes) if v != source]
    in_source = np.ones((2 ** len(free), nodes), dtype=np.float32)
    in_source[:, free] = np.arange(2 ** len(free))[:, None] >> np.arange(len(free)) & 1
    cuts = ((in_source @ capacity) * (1 - in_source)).sum(1)
    return [float(cuts[in_source[:, token] == 0].min()) for token in range(n)]


def test_max_flow_equals_brute_force_min_cut_on_four_tokens(tiny):
    model, tok = tiny
    result = attnlab.flow(model, tok, "The cat", method="maxflow", position=[0, 1, 2, 3])
    assert len(result.tokens) == 4
    adjusted = residual_attention(_eager_maps(model, tok, "The cat"))
    for row, position in enumerate(result.positions):
        np.testing.assert_allclose(result.max_flow[row], _min_cuts_by_brute_force(adjusted, position), atol=1e-5)
    assert np.all(result.max_flow <= 1 + 1e-9)                           # each output node sends at most 1
    np.testing.assert_allclose(result.relevance.sum(1), 1.0)


def test_max_flow_agrees_with_networkx_edmonds_karp(tiny):
    """The paper's code solves each problem with networkx's Edmonds-Karp on float capacities."""
    nx = pytest.importorskip("networkx")
    model, tok = tiny
    result = attnlab.flow(model, tok, TEXT, method="maxflow")
    adjusted = residual_attention(_eager_maps(model, tok, TEXT))
    n_layers, n, _ = adjusted.shape
    graph = nx.DiGraph()
    for layer, i, j in zip(*np.nonzero(adjusted)):
        graph.add_edge((layer + 1, i), (layer, j), capacity=adjusted[layer, i, j])
    expected = [nx.maximum_flow_value(graph, (n_layers, n - 1), (0, j), flow_func=nx.algorithms.flow.edmonds_karp)
                for j in range(n)]
    np.testing.assert_allclose(result.max_flow[0], expected, atol=1e-5)


def test_length_limits_and_bad_input_are_one_line(tiny):
    model, tok = tiny
    cases = [({"max_tokens": 5}, "more than rollout's limit of 5"),
             ({"method": "maxflow", "max_tokens": 5}, "more than max-flow's limit of 5"),
             ({"method": "attention"}, "unknown method"), ({"residual": 1.5}, "residual must be"),
             ({"position": 99}, "not a token position"), ({"position": []}, "no position given")]
    for kwargs, message in cases:
        with pytest.raises(AttnlabError, match=message) as err:
            attnlab.flow(model, tok, TEXT, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(AttnlabError, match="max-flow's limit of 128") as err:
        attnlab.flow(model, tok, "word " * 150, method="maxflow")
    assert "--method rollout" in str(err.value)


def test_cli_writes_json_and_png_and_prints_top_tokens(tmp_path):
    result = runner.invoke(app, ["flow", "tiny", "--text", TEXT, "--exclude-sink", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "flow.json").read_text())
    assert data["method"] == "rollout" and data["exclude_sink"] is True and "Abnar" in data["paper"]
    assert len(data["relevance"]) == len(data["tokens"]) and all(row[0] == 0 for row in data["relevance"][1:])
    assert (tmp_path / "flow.png").read_bytes()[:4] == b"\x89PNG"
    assert "draws on" in result.output
    flows = runner.invoke(app, ["flow", "tiny", "--text", "The cat sat.", "--method", "maxflow", "--position", "-2",
                                "--out", str(tmp_path / "m")])
    assert flows.exit_code == 0, flows.output
    assert json.loads((tmp_path / "m" / "flow.json").read_text())["positions"] == [4]


def test_cli_bad_input_is_one_line(tmp_path):
    cases = [(["flow", "tiny"], "--text or with --file"),
             (["flow", "tiny", "--text", "word " * 150, "--method", "maxflow"], "limit of 128"),
             (["flow", "tiny", "--text", "The cat", "--position", "7"], "not a token position")]
    for args, message in cases:
        result = runner.invoke(app, args + ["--out", str(tmp_path / "o")])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len([line for line in result.output.splitlines() if line.startswith("error")]) == 1
    assert not (tmp_path / "o").exists()
