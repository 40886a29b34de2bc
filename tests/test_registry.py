"""The method registry: declared settings match the constructors, every method builds, bad settings are one line."""
import inspect
import json
import subprocess
import sys

import pytest

import attnlab
from attnlab.errors import AttnlabError
from attnlab.evals.harness import MethodSpec
from attnlab.steer import registry
from attnlab.steer.base import Param

SPANS = ["sea"]


def test_the_registry_holds_every_method_under_its_cli_name():
    assert list(registry.METHODS) == ["pasta", "act", "zerotuning", "instaboost", "spotlight", "head-scale",
                                      "temperature"]
    assert registry.METHODS["head-scale"] is attnlab.HeadScale and registry.METHODS["pasta"] is attnlab.PASTA
    assert {name: cls.span for name, cls in registry.METHODS.items()} == {
        "pasta": "emphasis", "act": None, "zerotuning": None, "instaboost": "instruction", "spotlight": "emphasis",
        "head-scale": None, "temperature": None}


@pytest.mark.parametrize("name", list(registry.METHODS))
def test_declared_settings_are_the_constructor_keywords_with_the_same_defaults(name):
    cls = registry.METHODS[name]
    signature = inspect.signature(cls.__init__).parameters
    declared = {p.name: p for p in cls.params}
    spans = {"emphasize", "instruction", "spans"} if cls.span else set()
    assert set(signature) - {"self"} - spans == set(declared)
    for key, p in declared.items():
        given = signature[key].default
        assert (given is inspect.Parameter.empty) == p.required, key
        if not p.required:
            assert given == p.default, key
        assert p.help and p.type in ("float", "int", "text", "heads", "grid")


def _settings(cls) -> dict:
    return {"heads": "L1H0"} if any(p.required for p in cls.params) else {}


@pytest.mark.parametrize("name", list(registry.METHODS))
def test_every_method_builds_from_its_defaults_and_steers(tiny, name):
    """Built from the registry with only what is required, each method changes the logits of the tiny model."""
    model, tok = tiny
    cls = registry.METHODS[name]
    method = registry.build(name, _settings(cls), SPANS if cls.span else None)
    assert type(method) is cls
    for p in cls.params:
        if p.type in ("float", "text") and not p.required:
            assert getattr(method, p.name) == p.default, p.name
    inputs = tok("The sea was calm and the sea was blue", return_tensors="pt")
    import torch

    with torch.no_grad():
        plain = model(**inputs).logits
        with attnlab.steer(model, method, tokenizer=tok):
            steered = model(**inputs).logits
    assert (steered - plain).abs().max() > 1e-3, name


@pytest.mark.parametrize("name", list(registry.METHODS))
def test_every_method_builds_from_the_command_line(name):
    from typer.testing import CliRunner

    from attnlab.cli import app

    cls = registry.METHODS[name]
    args = ["steer", "tiny", "-m", name, "--prompt", "The <<sea>> was calm.", "--max-new-tokens", "2", "--json"]
    for p in cls.params:
        value = {"heads": "L1H0", "text": p.default}.get(p.type, str(p.default))
        args += [f"--{p.name}", str(value)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["method"] == cls.__name__


def test_settings_are_parsed_and_checked_against_the_declaration():
    assert registry.parse_settings("pasta", {"alpha": "0.05", "heads": "L1,L2", "mode": "include"}) == {
        "alpha": 0.05, "heads": "L1,L2", "mode": "include"}
    assert registry.parse_settings("pasta", {"top_k": "3"}, select="heads") == {"top_k": 3}
    assert registry.parse_settings("zerotuning", {"grid": "0.5, 2"}, select="gamma") == {"grid": [0.5, 2.0]}
    cases = [("pasta", {"alpha": "abc"}, None, r"pasta: alpha must be a number in \(0, 1\), got 'abc'"),
             ("pasta", {"alpha": "1"}, None, r"pasta: alpha must be in \(0, 1\), got 1.0"),
             ("pasta", {"alpha": "nan"}, None, r"alpha must be in \(0, 1\), got nan"),
             ("pasta", {"foo": "1"}, None, "pasta has no setting 'foo': its settings are heads, alpha, mode, sink "
                                           r"\(choosing heads: also top_k, layers\)"),
             ("pasta", {"top_k": "4"}, None, "pasta has no setting 'top_k'"),
             ("pasta", {"top_k": "0"}, "heads", "top_k must be a positive integer, got 0"),
             ("pasta", {"top_k": "2.5"}, "heads", "top_k must be an integer > 0, got '2.5'"),
             ("pasta", {"heads": "L1"}, "heads", "heads is chosen from data"),
             ("pasta", {"mode": "sideways"}, None, "unknown mode 'sideways': use one of exclude, include, generation"),
             ("pasta", {"heads": " "}, None, "heads is empty"),
             ("zerotuning", {"gamma": "-1"}, None, "gamma must be a positive number, got -1.0"),
             ("zerotuning", {"grid": "0.5,x"}, "gamma", "grid must be a list of numbers"),
             ("zerotuning", {"grid": "0.5,0"}, "gamma", "grid must be a positive number, got 0.0"),
             ("head-scale", {"scale": "inf"}, None, "scale must be a finite number, got inf"),
             ("spotlight", {"heads": "L1"}, None, "spotlight has no setting 'heads': its settings are psi$"),
             ("pasta", {}, "gamma", "pasta has no setting 'gamma' to choose from data: it can choose heads"),
             ("telepathy", {}, None, "unknown method 'telepathy': choose from pasta, act")]
    for name, written, select, message in cases:
        with pytest.raises(AttnlabError, match=message):
            registry.parse_settings(name, written, select)


def test_python_values_go_through_the_same_checks():
    with pytest.raises(AttnlabError, match=r"PASTA: alpha must be in \(0, 1\), got True"):
        attnlab.PASTA(SPANS, alpha=True)
    with pytest.raises(AttnlabError, match="InstABoost: m must be a positive number"):
        attnlab.InstABoost(SPANS, m=0)
    with pytest.raises(AttnlabError, match="Temperature: unknown queries 'keys'"):
        attnlab.Temperature("L1H0", queries="keys")
    with pytest.raises(AttnlabError, match="head-scale needs heads"):
        registry.build("head-scale", {})
    with pytest.raises(AttnlabError, match="pasta has no setting 'beta'"):
        registry.build("pasta", {"beta": 0.5}, SPANS)
    assert attnlab.ZeroTuning(gamma={(1, 0): 3}).gamma == {(1, 0): 3.0}


def test_describe_is_json_for_a_form():
    described = json.loads(json.dumps({name: registry.describe(name) for name in registry.METHODS}))
    pasta = described["pasta"]
    assert pasta["class"] == "PASTA" and pasta["span"] == "emphasis"
    assert pasta["params"][1] == {"name": "alpha", "type": "float", "default": 0.01, "above": 0, "below": 1,
                                  "choices": [], "required": False,
                                  "help": "factor on the attention outside the emphasised text"}
    assert pasta["selectable"]["heads"][0]["name"] == "top_k"
    assert described["zerotuning"]["selectable"]["gamma"][0]["default"] == [0.25, 0.5, 0.75, 1.5, 2.0, 3.0, 4.0]
    assert described["head-scale"]["params"][0] == {"name": "heads", "type": "heads", "default": None,
                                                    "help": "heads to edit, e.g. L1H0 or L3", "above": None,
                                                    "below": None, "choices": [], "required": True}


def test_param_ranges_in_words():
    assert Param("a", "float", 0.5, "x", above=0, below=1).range_text() == "in (0, 1)"
    assert Param("a", "float", 1.0, "x", above=0).range_text() == "> 0"
    assert Param("a", "text", "b", "x", choices=("b", "c")).range_text() == "one of b, c"
    assert Param("a", "float", 1.0, "x").range_text() == ""


def test_method_spec_is_checked_when_made():
    spec = MethodSpec("pasta", {"alpha": 0.05, "top_k": 2}, select="heads")
    assert spec.method_params == {"alpha": 0.05} and spec.options == {"top_k": 2, "layers": 0}
    assert MethodSpec("zerotuning", select="gamma").options == {"grid": (0.25, 0.5, 0.75, 1.5, 2.0, 3.0, 4.0)}
    assert spec.span_name == "emphasis" and MethodSpec("instaboost", span="emphasis").span_name == "emphasis"
    for args, message in [(("pasta", {"gamma": 4.0}), "pasta has no setting 'gamma'"),
                          (("pasta", {}, "gamma"), "pasta has no setting 'gamma' to choose"),
                          (("zerotuning", {}, None, "emphasis"), "zerotuning acts on no span"),
                          (("act", {"beta": "0.5"}), "beta must be in"),
                          (("nothing",), "unknown method")]:
        with pytest.raises(AttnlabError, match=message):
            MethodSpec(*args)


def test_the_harness_does_not_import_the_command_line():
    code = "import sys, attnlab.evals.harness; assert 'attnlab.cli' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
