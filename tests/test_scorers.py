"""Reply scorers on hand-written replies: what must score 1, what must score 0, and nothing raises."""
import pytest

from attnlab.errors import AttnlabError
from attnlab.evals.scorers import REPLY_SCORERS, first_json_object, first_number, normalise, reply_scorer
from attnlab.evals.tasks import EvalExample


def score(name, reply, answers, **meta):
    return REPLY_SCORERS[name].score(reply, EvalExample("prompt", answers, meta=meta))


@pytest.mark.parametrize("reply, expected", [
    ("Paris", 1.0), ("  paris.  ", 1.0), ("The answer is Paris!", 1.0), ("Answer: PARIS\nbecause it is", 1.0),
    ("\n\nParis\n", 1.0), ("Paris is the capital.", 0.0), ("Rome", 0.0), ("I cannot answer that.", 0.0), ("", 0.0)])
def test_line_scores_the_normalised_first_line(reply, expected):
    assert score("line", reply, ["Paris"])["correct"] == expected


def test_line_marks_an_empty_reply_unparsed():
    assert score("line", "  \n ", ["Paris"]) == {"correct": 0.0, "parsed": 0.0}
    assert score("line", "Rome", ["Paris"]) == {"correct": 0.0, "parsed": 1.0}


@pytest.mark.parametrize("reply, expected, parsed", [
    ("42", 1.0, 1.0), ("The value is 42.", 1.0, 1.0), ("42.0", 1.0, 1.0), ("It is 42, not 17.", 1.0, 1.0),
    ("17, then 42", 0.0, 1.0), ("Record 2 holds 42", 0.0, 1.0), ("forty-two", 0.0, 0.0), ("", 0.0, 0.0),
    ("I'm sorry, I can't help with that.", 0.0, 0.0), ("1,042", 0.0, 1.0)])
def test_number_scores_the_first_number(reply, expected, parsed):
    assert score("number", reply, ["42"]) == {"correct": expected, "parsed": parsed}


def test_first_number_reads_thousands_and_signs():
    assert first_number("about 1,234 people") == 1234 and first_number("-7 degrees") == -7
    assert first_number("no digits") is None


@pytest.mark.parametrize("reply, prediction, form", [
    ('{"occupation": "nurse"}', 1.0, 1.0),
    ('Sure! ```json\n{"name": "Ann", "occupation": "Nurse."}\n```', 1.0, 1.0),
    ('{"occupation": "teacher"}', 0.0, 1.0),                  # wrong value
    ('{"job": "nurse"}', 0.0, 1.0),                           # JSON without the key
    ('{"occupation": "nurse"', 0.0, 0.0),                     # malformed
    ("{occupation: nurse}", 0.0, 0.0), ("nurse", 0.0, 0.0), ("", 0.0, 0.0),
    ('{bad} then {"occupation": "nurse"}', 1.0, 1.0),          # the first {...} that parses
    ('{"occupation": ["nurse"]}', 0.0, 1.0)])
def test_json_reads_the_key_of_the_first_object(reply, prediction, form):
    assert score("json", reply, ["nurse"], key="occupation") == {"prediction": prediction, "format": form}


def test_first_json_object_skips_arrays_and_nested_braces():
    assert first_json_object('[1, 2] {"a": {"b": 1}}') == {"a": {"b": 1}}
    assert first_json_object("{not json") is None


@pytest.mark.parametrize("reply, expected", [("- a\n- b\n- c", 1.0), ("- a\n- b", 0.0), ("", 0.0)])
def test_regex_must_match(reply, expected):
    assert score("regex", reply, ["-"], pattern=r"(?m)(^- .*\n?){3}")["correct"] == expected


def test_contains_and_prefix():
    assert score("contains", "I think Rome.", [" Rome"])["correct"] == 1.0
    assert score("contains", "I think rome.", ["Rome"])["correct"] == 0.0
    assert score("prefix", "  Rome, of course", [" Rome"])["correct"] == 1.0
    assert score("prefix", "Of course Rome", ["Rome"]) == {"correct": 0.0, "parsed": 1.0}
    assert score("prefix", "", ["Rome"]) == {"correct": 0.0, "parsed": 0.0}


def test_normalise():
    assert normalise("  The final answer is: New  York!  ") == "new york"
    assert normalise("A: blue.") == "blue"


def test_scorer_parameters_missing_or_duplicate_names_are_one_line():
    with pytest.raises(AttnlabError, match="needs meta\\['key'\\]"):
        score("json", "{}", ["x"])
    with pytest.raises(AttnlabError, match="needs meta\\['pattern'\\]"):
        score("regex", "x", ["x"])
    with pytest.raises(AttnlabError, match="needs numeric answers"):
        score("number", "42", ["forty-two"])
    with pytest.raises(AttnlabError, match="already registered"):
        reply_scorer("number")(lambda reply, example: {"correct": 0.0})
