"""The sinks attnlab profile reports on the real models (figures in README and the model card)."""
import attnlab


def test_minilm_concentrates_attention_on_cls_in_layers_1_to_4(minilm):
    report = attnlab.profile(minilm[0], None, tokenizer=minilm[1])
    by_layer = [sum(row) / len(row) for row in report.summary.first_token_mass]
    assert report.texts[0].first_token == "[CLS]" and report.texts[0].bos_used
    assert by_layer[0] < 0.1                       # layer 0 attends to content
    assert all(m > 0.3 for m in by_layer[1:5])     # layers 1-4: [CLS] sink
    assert report.summary.heads_with_sink_beyond_layer0 >= 25
