"""Spans from text (substrings, character ranges, markers) and HeadSet parsing."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnlab.errors import AttnlabError
from attnlab.spans import HeadSet, char_range, strip_markers, token_range

plain = st.text(alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=30)


@given(st.lists(st.tuples(plain, plain), min_size=1, max_size=4), plain)
def test_strip_markers_recovers_marked_pieces(pieces, tail):
    marked = "".join(f"{before}<<{inside}>>" for before, inside in pieces) + tail
    clean, ranges = strip_markers(marked)
    assert clean == "".join(before + inside for before, inside in pieces) + tail
    assert [clean[a:b] for a, b in ranges] == [inside for _, inside in pieces]


def test_unclosed_marker():
    with pytest.raises(AttnlabError, match="unclosed marker"):
        strip_markers("keep <<this open")


def test_char_range_and_token_range(tiny):
    tok = tiny[1]
    text = "The capital of Zorland is Rome."
    a, b = char_range(text, "Zorland")
    assert text[a:b] == "Zorland"
    enc = tok(text, return_offsets_mapping=True)
    t0, t1 = token_range(enc["offset_mapping"], a, b)
    assert "Zorland" in tok.decode(enc["input_ids"][t0:t1])
    assert tok.decode(enc["input_ids"][t0:t1]).strip() in text
    with pytest.raises(AttnlabError, match="outside"):
        char_range(text, (5, 500))


def test_headset_parse():
    assert set(HeadSet.parse("L1H0-2,L3", 4, 4)) == {(1, 0), (1, 1), (1, 2), (3, 0), (3, 1), (3, 2), (3, 3)}
    assert len(HeadSet.parse("all", 2, 3)) == 6
    assert str(HeadSet.parse("L0H1", 2, 3)) == "L0H1"


@pytest.mark.parametrize("spec", [3, None, ["L1"]])
def test_headset_of_something_not_text_is_one_line(spec):
    with pytest.raises(AttnlabError, match="cannot read a head set given as a"):
        HeadSet.parse(spec, 4, 4)


def test_chat_spans_land_on_the_prompt_inside_the_template(smollm2):
    from attnlab.spans import Spans

    tok = smollm2[1]
    inputs = Spans.encode(tok, ["Say <<Rome>> twice."], {"tail": (9, 15)}, chat=True)
    ids = inputs["input_ids"][0]
    assert tok.convert_ids_to_tokens(ids[inputs.masks["marked"][0]].tolist()) == ["ĠRome"]
    assert tok.decode(ids[inputs.masks["tail"][0]]) == " twice."
    assert inputs.texts[0].startswith("<|im_start|>")
