"""IFEval-style constraint checkers and PASTA's pronoun scorer, on hand-written replies that pass and that must fail."""
import pytest

from attnlab.errors import AttnlabError
from attnlab.evals.constraints import CONSTRAINTS, check_constraint, count_bullets, loose_variants
from attnlab.evals.scorers import REPLY_SCORERS, get_reply_scorer
from attnlab.evals.tasks import EvalExample


def strict(name, reply, arg=None):
    return check_constraint(name, reply, arg)["strict"]


def loose(name, reply, arg=None):
    return check_constraint(name, reply, arg)["loose"]


def test_upper_case():
    assert strict("upper", "THE KING WENT TO WAR. HE WON, 3 TIMES!") == 1.0
    assert strict("upper", "THE KING WENT TO war.") == 0.0          # one lower-case word
    assert strict("upper", "123 !?") == 0.0                            # no letter at all
    assert strict("upper", "") == 0.0


def test_lower_case():
    assert strict("lower", "the king went to war, and won.") == 1.0
    assert strict("lower", "the king went to War.") == 0.0
    assert strict("lower", "   ") == 0.0


def test_no_commas():
    assert strict("no-commas", "Ruth stayed. Naomi went home.") == 1.0
    assert strict("no-commas", "Ruth stayed, Naomi went home.") == 0.0
    assert strict("no-commas", "") == 0.0                             # saying nothing is not following


def test_include_word():
    assert strict("include-word", "A Telescope was found.", "telescope") == 1.0
    assert strict("include-word", "Two telescopes were found.", "telescope") == 0.0   # whole words only
    assert strict("include-word", "Nothing here.", "telescope") == 0.0


def test_end_with():
    phrase = "Is there anything else I can help with?"
    assert strict("end-with", f"The story ends well. {phrase}  \n", phrase) == 1.0
    assert strict("end-with", f'"The story ends well. {phrase.lower()}"', phrase) == 1.0
    assert strict("end-with", f"{phrase} The story ends well.", phrase) == 0.0
    assert strict("end-with", "The story ends well. Is there anything else I can help with", phrase) == 0.0


def test_bullets():
    four = "* one\n* two\n- three\n  * four"
    assert count_bullets(four) == 4
    assert strict("bullets", four, 4) == 1.0
    assert strict("bullets", "* one\n* two\n* three", 4) == 0.0      # 3 bullets when 4 were asked
    assert strict("bullets", "**Bold** heading\n* one\n* two", 2) == 1.0   # bold text is not a bullet
    assert strict("bullets", "1. one\n2. two", 2) == 0.0               # numbered items are not bullets


def test_json_only():
    assert strict("json-only", '{"summary": "Ruth stays with Naomi."}') == 1.0
    assert strict("json-only", '```json\n{"summary": "Ruth stays."}\n```') == 1.0
    assert strict("json-only", '[1, 2]') == 1.0
    assert strict("json-only", 'Here is the JSON: {"summary": "Ruth stays."}') == 0.0   # text around it
    assert strict("json-only", '{"summary": "Ruth stays."} Hope this helps.') == 0.0
    assert strict("json-only", '{"summary": "Ruth stays."') == 0.0       # not closed
    assert strict("json-only", '"just a string"') == 0.0


def test_loose_forgives_a_preamble_but_strict_does_not():
    reply = "Sure! Here is my answer:\nTHE KING WENT TO WAR."
    assert strict("upper", reply) == 0.0
    assert loose("upper", reply) == 1.0
    assert loose("upper", "The king went to war.\nHe won.") == 0.0       # no variant is all upper case
    assert loose("bullets", "Here you go:\n* **one**\n* **two**", 2) == 1.0
    assert loose_variants("a\nb\nc")[:4] == ["a\nb\nc", "b\nc", "a\nb", "b"]


def test_scorers_registered_and_read_meta():
    for name in CONSTRAINTS:
        assert f"ifeval-{name}" in REPLY_SCORERS
    example = EvalExample("p", [], meta={"constraint": "bullets", "arg": 3})
    assert get_reply_scorer("ifeval").score("* a\n* b\n* c", example) == {"strict": 1.0, "loose": 1.0, "parsed": 1.0}
    assert get_reply_scorer("ifeval").score("", example) == {"strict": 0.0, "loose": 0.0, "parsed": 0.0}
    assert get_reply_scorer("ifeval-no-commas").score("a, b", EvalExample("p", [])) == \
        {"strict": 0.0, "loose": 0.0, "parsed": 1.0}
    with pytest.raises(AttnlabError, match="unknown constraint 'shout'"):
        get_reply_scorer("ifeval").score("x", EvalExample("p", [], meta={"constraint": "shout"}))
    with pytest.raises(AttnlabError, match="needs meta\\['arg'\\]"):
        get_reply_scorer("ifeval").score("x", EvalExample("p", [], meta={"constraint": "end-with"}))


@pytest.mark.parametrize("reply, expected", [
    ("Alex is a nurse. They work nights and their patients like them.", (1.0, 1.0)),
    ("Alex is a nurse. They work nights and his patients like them.", (0.0, 1.0)),   # 'his' left
    ("Alex is a nurse. She works nights.", (0.0, 0.0)),
    ("Alex is a nurse who works nights.", (0.0, 1.0)),                              # no they/them at all
    ("Alex: THEY said HE would come.", (0.0, 0.0)),                                       # any case
    ("Alex: the theme of the shelter, they help.", (1.0, 1.0)),                     # 'the', 'shelter' are not 'he'
    ("They paint. Their work sells.", (0.0, 0.0)),                                  # the example copied: no rewrite
])
def test_pronouns(reply, expected):
    scores = get_reply_scorer("pronouns").score(reply, EvalExample("p", [], meta={"name": "Alex"}))
    assert list(scores) == ["changed", "no_she_he", "parsed"]
    assert (scores["changed"], scores["no_she_he"]) == expected
    assert get_reply_scorer("pronouns").score("  ", EvalExample("p", [])) == \
        {"changed": 0.0, "no_she_he": 0.0, "parsed": 0.0}
