"""Lookback Lens: the probe against eager attention maps, the detector's JSON, the labellers, guided decoding."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import transformers  # noqa: F401  (its log handler is made now, on the real stderr, not on a CliRunner's)

from attnlab.batching import pad_rows
from attnlab.cli import app
from attnlab.errors import AttnlabError
from attnlab.lookback import LookbackDetector, decoding, generate_with_ratios, lookback_prompt, teacher_forced
from attnlab.lookback.data import Label, counterfact_examples, label_counterfact, label_record, token_labels
from attnlab.lookback.features import span_units, table, window_units
from attnlab.lookback.probe import Trace

runner = CliRunner()
TEXTS = ["Context: The Eiffel Tower is in Rome.\nQuestion: Where is the Eiffel Tower?",
         "Context: Maria Lopez is 34.\nQuestion: How old is she?"]


def eager_ratios(model, prompt, reply) -> np.ndarray:
    """``[L, H, T]`` by hand from eager attention maps of one unpadded forward over prompt + reply[:-1]."""
    ids = torch.tensor([list(prompt.ids) + reply[:-1]])
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            maps = model(input_ids=ids, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(before)
    n, p = prompt.context_end, len(prompt.ids)
    out = np.zeros((len(maps), maps[0].shape[1], len(reply)))
    for layer, a in enumerate(maps):
        for t in range(len(reply)):
            row = a[0, :, p - 1 + t].double()                       # the query that produces reply token t
            ctx, new = row[:, :n].mean(-1), row[:, n:p + t].mean(-1)
            out[layer, :, t] = (ctx / (ctx + new)).numpy()
    return out


def test_lookback_ratio_matches_eager_at_decode_steps_and_teacher_forced(tiny):
    model, tok = tiny
    prompts = [lookback_prompt(tok, text) for text in TEXTS]
    assert len(prompts[0].ids) != len(prompts[1].ids)              # the batch is left padded
    torch.manual_seed(0)
    generated = generate_with_ratios(model, tok, prompts, 6, sample=True)
    forced = teacher_forced(model, tok, prompts, [ids for ids, _ in generated], batch_size=2)
    for prompt, (ids, at_decode), trace in zip(prompts, generated, forced):
        assert len(ids) >= 2 and at_decode.shape == (4, 8, len(ids))
        reference = eager_ratios(model, prompt, ids)
        np.testing.assert_allclose(at_decode, reference, atol=1e-5)
        np.testing.assert_allclose(trace.ratios, reference, atol=1e-5)
        assert np.isfinite(trace.logprob).all() and (trace.entropy >= 0).all() and trace.hidden.shape[0] == len(ids)


def test_prompt_boundary_puts_the_response_header_among_new_tokens(tiny, smollm2):
    plain = lookback_prompt(tiny[1], TEXTS[0])
    assert tiny[1].decode(list(plain.ids[plain.context_end:])) == "\nAnswer:"
    chat = lookback_prompt(smollm2[1], TEXTS[0])
    assert smollm2[1].decode(list(chat.ids[chat.context_end:])) == "<|im_end|>\n<|im_start|>assistant\n"
    assert smollm2[1].decode(list(chat.ids[:chat.context_end])).endswith("Where is the Eiffel Tower?")


def _fitted(n_layers=4, n_heads=8, setting="window"):
    rng = np.random.default_rng(0)
    X = rng.random((40, n_layers * n_heads))
    y = (X[:, 0] + 0.3 * rng.random(40) > 0.6).astype(int)
    return LookbackDetector(n_layers, n_heads, setting=setting, model_name="tiny").fit(X, y), X


def test_detector_json_round_trip_gives_identical_probabilities(tmp_path):
    det, X = _fitted()
    again = LookbackDetector.load(det.save(tmp_path / "det.json"))
    assert np.array_equal(det.predict_proba(X), again.predict_proba(X))
    assert (again.n_layers, again.n_heads, again.setting, again.window, again.model_name) == (4, 8, "window", 8, "tiny")
    assert b"pickle" not in (tmp_path / "det.json").read_bytes()


def test_detector_for_another_head_count_is_one_line(tiny, tmp_path):
    det, _ = _fitted(30, 9)
    with pytest.raises(AttnlabError, match=r"trained for 30 layers x 9 heads \(tiny\) but tiny has 4 x 8"):
        det.check_model(tiny[0], "tiny")
    with pytest.raises(AttnlabError, match="32 columns given to a detector for 30 layers x 9 heads"):
        det.predict_proba(np.zeros((1, 32)))
    det.save(tmp_path / "det.json")
    result = runner.invoke(app, ["lookback", "score", "tiny", "-d", str(tmp_path / "det.json"), "-c", "Rome is big.",
                                 "-q", "Is it?", "-r", "Yes."])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "trained for 30 layers x 9 heads" in errors[0], result.output


def test_generation_without_a_context_is_one_line(tmp_path):
    det, _ = _fitted()
    det.save(tmp_path / "det.json")
    result = runner.invoke(app, ["lookback", "generate", "tiny", "-d", str(tmp_path / "det.json"), "-q", "Where?"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "needs the context" in errors[0], result.output


def test_counterfact_labels():
    assert label_counterfact("The capital of France is Berlin.", "Berlin", "Paris") == Label(True)
    assert label_counterfact("The capital of France is Paris.", "Berlin", "Paris") == Label(False, [(25, 30)])
    assert label_counterfact("Berlin, though really Paris.", "Berlin", "Paris") == Label(False, [(22, 27)])
    assert label_counterfact("It is Madrid.", "Berlin", "Paris") == Label(False, [(0, 13)])
    assert label_counterfact("Asian food.", "Asia", "Europe") == Label(False, [(0, 11)])   # whole words only
    assert label_counterfact("South america", "South America", "Asia").faithful


def test_record_labels():
    source = "Name: Maria Lopez. Age: 34. City: Denver. Employer: Northwind Labs. Joined: 2015. Team size: 1,200."
    assert label_record("Maria Lopez, 34, has worked at Northwind Labs in Denver since 2015.", source).faithful
    assert label_record("Maria Lopez leads a team of 1200.", source).faithful
    assert label_record("Maria Lopez is 35.", source) == Label(False, [(15, 17)])
    assert label_record("Maria Okafor lives in Leeds.", source) == Label(False, [(6, 12), (22, 27)])
    assert label_record("Maria is a Canadian engineer.", source) == Label(False, [(11, 19)])
    assert label_record("She joined in 2015. Her team is big.", source).faithful   # sentence starts are not names


def test_token_labels_mark_the_tokens_of_a_hallucinated_range(tiny):
    tok = tiny[1]
    reply = "The capital is Paris."
    ids = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    text, labels = token_labels(tok, ids, label_counterfact(reply, "Berlin", "Paris"))
    assert text == reply and len(labels) == len(ids) and labels[-1] == 1
    marked = tok.decode([i for i, lab in zip(ids, labels) if lab == 0])
    assert "Paris" in marked and "capital" not in marked


def test_feature_units_follow_the_papers_two_settings():
    spans = span_units([1, 1, 0, 1, 0, 1])
    assert [(u.tolist(), lab) for u, lab in spans] == [([0, 1], 1), ([2, 4], 0), ([5], 1)]
    assert [(u.tolist(), lab) for u, lab in span_units([1, 1])] == [([0, 1], 1)]
    windows = window_units([1, 1, 1, 0, 1], window=3)
    assert [(u.tolist(), lab) for u, lab in windows] == [([0, 1, 2], 1), ([1, 2, 3], 0), ([2, 3, 4], 0)]
    assert window_units([1, 1], window=3) == []
    ratios = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    trace = Trace(ratios, np.zeros(4), np.ones(4), np.zeros((4, 5)))
    tab = table([trace], [{"token_labels": [1, 0, 1, 1], "group": 7}], "span")
    assert tab["lookback"].shape == (3, 6) and tab["y"].tolist() == [1, 0, 1] and tab["group"].tolist() == [7] * 3
    np.testing.assert_allclose(tab["lookback"][2], ratios[:, :, 2:].mean(-1).reshape(-1))


def test_guided_decoding_keeps_the_best_scored_candidate(tiny, monkeypatch):
    model, tok = tiny
    rounds = iter([[([5, 6], np.full((1, 2, 2), 0.2)), ([7, 8], np.full((1, 2, 2), 0.9)),
                    ([9, 10], np.full((1, 2, 2), 0.5))],
                   [([11], np.full((1, 2, 1), 0.1)), ([12], np.full((1, 2, 1), 0.3)),
                    ([13, 14], np.full((1, 2, 2), 0.2))]])
    asked = []

    def stub(model_, tok_, prompts, steps, **kwargs):
        asked.append((prompts[0].ids, steps, len(prompts)))
        return next(rounds)

    monkeypatch.setattr(decoding, "generate_with_ratios", stub)
    prompt = lookback_prompt(tok, TEXTS[0])
    reply, scores = decoding.guided_generate(model, tok, prompt, lambda X: X[:, 0], candidates=3, chunk=2,
                                             max_new_tokens=10)
    assert reply == [7, 8, 12] and scores == pytest.approx([0.9, 0.3])      # the second round came back short
    assert asked == [(prompt.ids, 2, 3), (prompt.ids + (7, 8), 2, 3)]


def test_guided_decoding_runs_on_a_model(tiny):
    model, tok = tiny
    seen = []
    torch.manual_seed(0)
    reply, scores = decoding.guided_generate(model, tok, lookback_prompt(tok, TEXTS[1]),
                                             lambda X: seen.append(X.shape) or -X.mean(1), candidates=2, chunk=3,
                                             max_new_tokens=6)
    assert 1 <= len(reply) <= 6 and len(scores) == len(seen) and all(s == (2, 32) for s in seen)


def test_counterfact_examples_contradict_the_facts():
    examples = counterfact_examples()
    assert len(examples) == 96 and all(e.answer != e.parametric and e.answer in e.text for e in examples)
    assert {e.group for e in examples[:2]} == {0}


def test_fit_then_score_on_the_command_line(tmp_path):
    folder = tmp_path / "fit"
    result = runner.invoke(app, ["lookback", "fit", "tiny", "--task", "records", "--n", "6", "--max-new-tokens", "12",
                                 "--out", str(folder)])
    assert result.exit_code == 0, result.output
    det = LookbackDetector.load(folder / "detector.json")
    assert (det.n_layers, det.n_heads, det.setting, det.model_name) == (4, 8, "span", "tiny")
    assert (folder / "data" / "records.json").is_file()
    result = runner.invoke(app, ["lookback", "score", "tiny", "-d", str(folder / "detector.json"), "--json",
                                 "-c", "Maria Lopez is 34.", "-q", "How old is Maria?", "-r", "Maria is 34 years old."])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output)
    assert 0 <= scored["p_faithful"] <= 1 and scored["setting"] == "span"


def test_auroc_equals_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    from attnlab.lookback.evaluate import auroc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    scores = rng.integers(0, 5, 50).astype(float)              # many ties
    assert auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
