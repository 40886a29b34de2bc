"""attnlab heads: every score against an independent computation on eager attention maps, and the command."""
import json

import pytest
import torch
from typer.testing import CliRunner

from archs import build
from attnlab.cli import app
from attnlab.errors import AttnlabError
from attnlab.heads import head_role_scores, head_scores, needle_batches, repeated_random_tokens, retrieval_scores
from attnlab.heads.report import HeadReport

TOL = 1e-5
runner = CliRunner()


def eager(model, ids, hidden=False):
    """One unpadded forward with eager attention: the output with ``attentions`` (and hidden states)."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(ids, output_attentions=True, output_hidden_states=hidden)
    finally:
        model.set_attn_implementation(before)


def maps_of(out):
    return torch.stack(out.attentions)                                                   # [L, B, H, T, T]


def test_duplicate_previous_induction_equal_eager(tiny):
    model, tok = tiny
    length = 10
    ids = repeated_random_tokens(tok, length, 3, seed=2)
    ids[0, 3] = ids[0, 1]                   # a token twice inside r: its queries see 2-3 earlier copies
    scores = head_role_scores(model, tok, length=length, batch=3, seed=2)
    from attnlab.collect import forward_with_probes
    from attnlab.heads.roles import role_probes

    probes = role_probes(ids, length)
    forward_with_probes(model, ids, torch.ones_like(ids), probes)
    got = {p.name: p.result().mean(1) for p in probes}
    reference = repeated_random_tokens(tok, length, 3, seed=2)
    for case, case_ids in ((scores, reference), (got, ids)):
        maps = maps_of(eager(model, case_ids))
        n = case_ids.shape[1]
        induction = torch.stack([maps[..., i, i - (length - 1)] for i in range(length + 1, n)], -1).mean((-1, 1))
        previous = torch.stack([maps[..., i, i - 1] for i in range(1, n)], -1).mean((-1, 1))
        rows = []
        for b in range(case_ids.shape[0]):
            per_query = [maps[:, b, :, i, [j for j in range(i) if case_ids[b, j] == case_ids[b, i]]].sum(-1)
                         for i in range(n) if (case_ids[b, :i] == case_ids[b, i]).any()]
            rows.append(torch.stack(per_query, -1).mean(-1))
        duplicate = torch.stack(rows).mean(0)
        assert (case["induction"] - induction).abs().max() <= TOL
        assert (case["previous_token"] - previous).abs().max() <= TOL
        assert (case["duplicate_token"] - duplicate).abs().max() <= TOL


def llama_head_norms(model, out, layer, maps):
    """``[H, T]`` ``||(A v) W_O^h||`` of a Llama layer from its hidden input, by hand."""
    block = model.model.layers[layer]
    x = block.input_layernorm(out.hidden_states[layer][0])
    attn = block.self_attn
    d = attn.head_dim
    v = attn.v_proj(x).view(x.shape[0], -1, d).transpose(0, 1)                          # [Hkv, T, D]
    v = v.repeat_interleave(maps.shape[2] // v.shape[0], dim=0)                          # [H, T, D]
    o = maps[layer, 0] @ v                                                               # [H, T, D]
    w = attn.o_proj.weight                                                               # [d_model, H * D]
    return torch.stack([(o[h] @ w[:, h * d:(h + 1) * d].T).norm(dim=-1) for h in range(o.shape[0])])


def bert_head_norms(model, out, layer, maps):
    """The same for a BERT layer: values from its ``attention.self.value``, W_O its ``attention.output.dense``."""
    block = model.encoder.layer[layer]
    x = out.hidden_states[layer][0]
    h_count = maps.shape[2]
    v = block.attention.self.value(x).view(x.shape[0], h_count, -1).transpose(0, 1)     # [H, T, D]
    o = maps[layer, 0] @ v
    d = v.shape[-1]
    w = block.attention.output.dense.weight
    return torch.stack([(o[h] @ w[:, h * d:(h + 1) * d].T).norm(dim=-1) for h in range(h_count)])


def text_reference(model, tok, texts, window, sink, norm, head_norms, encoder=False):
    """Per-text eager figures (each text alone, no padding), averaged over texts as ``head_scores`` does."""
    per = {k: [] for k in ("first_token_mass", "local", "mean_distance", "output_norm", "cls_mass", "sep_mass",
                           "punctuation_mass")}
    for text in texts:
        ids = tok(text, return_tensors="pt").input_ids
        out = eager(model, ids, hidden=True)
        maps = maps_of(out)                                                              # [L, 1, H, T, T]
        a = maps[:, 0]
        t = ids.shape[1]
        dist = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs().float()
        per["first_token_mass"].append(a[..., 1:, 0].mean(-1))
        per["local"].append((a * (dist < window)).sum(-1)[..., window:].mean(-1))
        per["mean_distance"].append((a * dist).sum(-1).mean(-1))
        norms = torch.stack([head_norms(model, out, l, maps)[:, 1:].mean(-1) for l in range(a.shape[0])])
        per["output_norm"].append(norms / norms.mean(-1, keepdim=True))
        if encoder:
            tokens = tok.convert_ids_to_tokens(ids[0])
            for name, keys in (("cls_mass", [0]), ("sep_mass", [t - 1]),
                               ("punctuation_mass", [j for j, s in enumerate(tokens) if s in (".", ",")])):
                per[name].append(a[..., keys].sum(-1).mean(-1))
    ref = {k: torch.stack(v) for k, v in per.items() if v}
    ref["dormant"] = ((ref["first_token_mass"] >= sink) & (ref["output_norm"] <= norm)).float().mean(0)
    return {k: v.mean(0) if k != "dormant" else v for k, v in ref.items()}


TEXTS = ["The old keeper climbed the stairs at dusk, trimmed the wick, and wrote the weather in his book.",
         "Ships passed far out. None of them knew his name, and the light burned all night."]


def test_text_scores_equal_eager(tiny):
    model, tok = tiny
    names = ["first_token_mass", "local", "mean_distance", "output_norm", "dormant"]
    ref = text_reference(model, tok, TEXTS, 3, 0.02, 1.0, llama_head_norms)
    report = head_scores(model, tok, scores=names, texts=TEXTS, window=3, dormant_sink=0.02, dormant_norm=1.0,
                         batch_size=2)                                                   # one left-padded batch
    for name in names:
        got = torch.tensor(report.scores[name].values)
        assert (got - ref[name]).abs().max() <= TOL, name
    assert 0 < float(ref["dormant"].mean()) < 1                                          # the rule is exercised


def test_encoder_delimiter_and_norms_equal_eager(minilm):
    model, tok = minilm
    names = ["cls_mass", "sep_mass", "punctuation_mass", "first_token_mass", "local", "mean_distance",
             "output_norm", "dormant"]
    ref = text_reference(model, tok, TEXTS, 2, 0.3, 0.9, bert_head_norms, encoder=True)
    report = head_scores(model, tok, scores=names, texts=TEXTS, window=2, dormant_sink=0.3, dormant_norm=0.9,
                         batch_size=2)                                                   # one right-padded batch
    for name in names:
        got = torch.tensor(report.scores[name].values)
        assert (got - ref[name]).abs().max() <= TOL, name
    with pytest.raises(AttnlabError, match="needs a causal LM"):
        head_scores(model, tok, scores=["retrieval"])


def test_needle_inputs_repeat_the_needle(tiny):
    _, tok = tiny
    for batch in needle_batches(tok, context_tokens=80, depths=(0.0, 0.5, 1.0)):
        a = batch.answer_start
        answer = batch.ids[0, a:].tolist()
        assert tok.decode(answer).strip() == batch.needle
        assert batch.scored > 3 and batch.ids.shape[0] == 3
        for row, targets in zip(batch.ids.tolist(), batch.targets):
            for q in (targets >= 0).nonzero().flatten().tolist():
                key = int(targets[q])
                assert row[key] == row[q + 1] and row[:a].count(row[q + 1]) == 1 and q + 1 >= a


def test_retrieval_equals_eager_argmax(tiny):
    model, tok = tiny
    depths = (0.0, 0.5, 1.0)
    rows, copies = [], []
    for batch in needle_batches(tok, context_tokens=80, depths=depths):
        out = eager(model, batch.ids)
        top = maps_of(out).argmax(-1)                                                    # [L, D, H, T]
        a = batch.answer_start
        copies.append((out.logits[:, a - 1:-1].argmax(-1) == batch.ids[:, a:]).float().mean(-1))
        for b in range(batch.ids.shape[0]):
            qs = (batch.targets[b] >= 0).nonzero().flatten()
            rows.append((top[:, b][..., qs] == batch.targets[b, qs]).float().mean(-1))  # [L, H]
    copies = torch.cat(copies)
    cut = float(copies.median())                      # keep the examples copied better than the median
    kept = copies > cut
    assert 0 < int(kept.sum()) < len(kept)                                               # the filter is exercised
    got = retrieval_scores(model, tok, context_tokens=80, depths=depths, min_copy=cut)
    assert torch.equal(got["kept"], kept) and (got["copy_accuracy"] - copies).abs().max() <= TOL
    assert (got["scores"] - torch.stack(rows)[kept].mean(0)).abs().max() <= TOL


def test_output_norm_of_gpt2_conv1d(tiny):
    """GPT-2's output projection is a Conv1D (``[in, out]``): its head norms against a hand computation."""
    _, tok = tiny
    model = build("gpt2", len(tok))
    ids = tok(TEXTS[0], return_tensors="pt").input_ids
    report = head_scores(model, tok, scores=["output_norm"], texts=TEXTS[:1])
    out = eager(model, ids, hidden=True)
    maps = maps_of(out)
    ref = []
    for layer, block in enumerate(model.transformer.h):
        x = block.ln_1(out.hidden_states[layer][0])
        v = block.attn.c_attn(x)[:, 128:].view(x.shape[0], 4, 16).transpose(0, 1)       # [H, T, D]
        o = maps[layer, 0] @ v
        w = block.attn.c_proj.weight                                                     # [H * D, d_model]
        norms = torch.stack([(o[h] @ w[h * 16:(h + 1) * 16]).norm(dim=-1)[1:].mean() for h in range(4)])
        ref.append(norms / norms.mean())
    assert (torch.tensor(report.scores["output_norm"].values) - torch.stack(ref)).abs().max() <= TOL


def test_bad_settings_are_refused(tiny):
    model, tok = tiny
    for kwargs, message in (({"scores": ["nope"]}, "unknown score 'nope'"), ({"scores": ["cls_mass"]}, "an encoder"),
                            ({"scores": []}, "no score"), ({"length": 1}, "length must be"),
                            ({"length": 400}, "at most 512"), ({"context_tokens": 5000}, "context_tokens <="),
                            ({"dormant_sink": 0}, "dormant_sink"), ({"min_copy": 1.0}, "min_copy")):
        with pytest.raises(AttnlabError, match=message):
            head_scores(model, tok, **kwargs)


def test_cli_writes_report_table_and_grid(tmp_path):
    args = ["heads", "tiny", "--length", "8", "--batch", "2", "--context-tokens", "60", "--top", "3",
            "--heads", "L1H0-1", "--min-copy", "0", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = HeadReport.model_validate(json.loads((tmp_path / "heads.json").read_text()))
    assert report.model.name == "tiny" and report.scores["retrieval"].values is not None
    assert len(report.scores["induction"].values) == 4 and len(report.needle_examples) == 15
    assert "cls_mass" not in report.scores
    assert (tmp_path / "heads.png").read_bytes()[:4] == b"\x89PNG"
    assert "top 3 heads per score" in result.output and "chosen heads" in result.output


@pytest.mark.parametrize("args, message", [
    (["--top", "0"], "--top must be >= 1"), (["--scores", "induction,nope"], "unknown score 'nope'"),
    (["--scores", " , "], "--scores is empty"), (["--heads", "L9"], "layer 9 in 'L9' does not exist"),
    (["--scores", "sep_mass"], "needs an encoder"), (["--length", "1"], "length must be"),
    (["--ablate", "nope"], "unknown --ablate score 'nope'"), (["--ablate", "induction", "--ks", "1,x"], "--ks must"),
    (["--ablate", "induction", "--ablate-task", "poems"], "unknown --ablate-task 'poems'"),
    (["--importance", "--n", "0"], "--n and --draws must be >= 1"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    result = runner.invoke(app, ["heads", "tiny", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_cli_ablate_masks_the_top_heads_of_the_score(tmp_path, tiny):
    from attnlab.heads.ablation import make_examples, score

    model, tok = tiny
    args = ["heads", "tiny", "--scores", "induction", "--length", "8", "--batch", "2", "--ablate", "induction",
            "--ks", "0,2", "--draws", "2", "--n", "4", "--importance", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = HeadReport.model_validate(json.loads((tmp_path / "heads.json").read_text()))
    values = torch.tensor(report.scores["induction"].values)
    top2 = [f"L{int(i) // values.shape[1]}H{int(i) % values.shape[1]}" for i in values.flatten().argsort(descending=True)[:2]]
    ablation = json.loads((tmp_path / "ablation.json").read_text())
    assert ablation["ranked_by"] == "induction" and ablation["task"] == "induction"
    assert ablation["curve"][1]["heads"] == top2
    # K = 0 is the unablated model: both curves equal a plain teacher-forced score on the same examples (seed + 1).
    plain, _ = score(model, make_examples("induction", tok, 4, seed=1))
    for curve in ("ranked", "random"):
        assert ablation["curve"][0][curve]["accuracy"]["mean"] == pytest.approx(float(plain.mean()), abs=1e-9)
    importance = json.loads((tmp_path / "importance.json").read_text())
    assert len(importance["scores"]) == 4 and importance["pruning"]["label"] == "least important first"
    for name in ("ablation.png", "importance.png", "pruning.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
