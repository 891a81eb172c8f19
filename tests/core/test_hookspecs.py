"""The hookspecs: every hook's docstring is the contract plugin authors read (as in pluggy).

The hooks are read from a plugin manager through pluggy's public API, wherever the
specifications live.  That docs/plugins.md shows every hook with its signature and
docstring: tests/test_docs.py.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import torchstitch as ts

#: how a hook's answers are combined, and the words its docstring must say it with
COMBINED = {
    "collected": "All results are collected",
    "first": "firstresult",
    "chained": "chained",
    "ignored": "ignored",
}


def hookspecs() -> dict[str, Any]:
    """Every hook specification of a fresh manager, by hook name."""
    hooks = ts.make_plugin_manager(autoload=False).hook
    return {name: caller.spec for name, caller in sorted(vars(hooks).items()) if caller.spec is not None}


SPECS = hookspecs()


def test_the_engines_hooks_are_all_specified():
    assert {
        "torchstitch_strategies",
        "torchstitch_claim",
        "torchstitch_tracing_inputs",
        "torchstitch_prepare",
        "torchstitch_artifact_formats",
        "torchstitch_node_compiled",
    } <= set(SPECS)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_hook_carries_the_project_prefix_and_a_summary_line(name):
    spec = SPECS[name]
    assert name.startswith("torchstitch_")
    doc = inspect.getdoc(spec.function)
    assert doc, f"{name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.endswith("."), f"{name}: the first line is not one sentence: {summary!r}"
    assert len(doc.splitlines()) > 2, f"{name}: a one-line docstring states no contract"


@pytest.mark.parametrize("name", list(SPECS))
def test_every_hook_says_how_its_answers_are_combined_and_firstresult_ones_say_so(name):
    spec = SPECS[name]
    doc = " ".join(inspect.getdoc(spec.function).split())
    said = [how for how, words in COMBINED.items() if words in doc]
    assert said, f"{name}: the docstring does not say how answers are combined ({sorted(COMBINED.values())})"
    first = bool(spec.opts.get("firstresult"))
    assert ("first" in said) == first, f"{name}: firstresult={first} but the docstring says {said}"
    if first:
        assert "first non-``None``" in doc


@pytest.mark.parametrize("name", list(SPECS))
def test_a_hook_that_may_answer_none_says_what_none_means(name):
    spec = SPECS[name]
    returns = str(inspect.signature(spec.function).return_annotation)
    doc = inspect.getdoc(spec.function)
    if returns == "None":
        assert "ignored" in doc, f"{name} returns nothing: say that the return value is ignored"
    elif returns.endswith("| None"):
        assert "``None``" in doc, f"{name} may return None: say what None means"
