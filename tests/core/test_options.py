"""The compile options are listed once (CompileOptions); the public signatures agree with it."""

from __future__ import annotations

import inspect

import attrs
import pytest

import torchstitch as ts
from torchstitch.core import api
from torchstitch.core.options import CALL_ARGUMENTS, SUGAR, CompileOptions


def _keywords(fn) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if name not in CALL_ARGUMENTS and name != "self"
    }


def _fields_of(keywords) -> set[str]:
    return {SUGAR.get(name, name) for name in keywords}


def test_engine_takes_every_option_and_nothing_else():
    assert _fields_of(_keywords(ts.Engine.__init__)) == {f.name for f in attrs.fields(CompileOptions)}


def test_compile_takes_the_engines_options_with_the_same_defaults():
    assert _keywords(ts.compile) == _keywords(ts.Engine.__init__)


def test_plan_takes_the_options_that_shape_a_plan_with_the_same_defaults():
    engine = _keywords(ts.Engine.__init__)
    plan = _keywords(ts.plan)
    assert set(plan) <= set(engine)
    assert {name: engine[name] for name in plan} == plan


class _Handed(Exception):
    """Raised by the stand-in Engine with the keywords it was given."""


def _stand_in_engine(**keywords):
    raise _Handed(keywords)


@pytest.mark.parametrize("entry", [ts.compile, ts.plan], ids=["compile", "plan"])
def test_every_option_is_handed_to_the_engine_as_given(monkeypatch, entry):
    given = {name: object() for name in _keywords(entry)}
    monkeypatch.setattr(api, "Engine", _stand_in_engine)
    with pytest.raises(_Handed) as handed:
        entry(None, example_inputs=object(), inputs=object(), root_strategy=object(), **given)
    assert handed.value.args[0] == given


def test_defaults_are_the_fields_defaults():
    options = ts.Engine().options
    assert options == CompileOptions()
    assert options == CompileOptions.from_arguments()


def test_sugar_becomes_fields():
    options = CompileOptions.from_arguments(
        script_options={"a": 1}, strategy_options={"trace": {"b": 2}}, trace_options={"c": 3}, atol=0.5
    )
    assert options.strategy_options == {"script": {"a": 1}, "trace": {"c": 3}}
    assert (options.tolerance.atol, options.tolerance.rtol) == (0.5, None)


@pytest.mark.parametrize(
    ("keyword", "value", "error"),
    [
        ("on_error", "ignore", ValueError),
        ("n_trace_checks", 0, ValueError),
        ("verify", "yes", TypeError),
        ("plugins", "no:trace", TypeError),
        ("script_options", [1], TypeError),
    ],
)
def test_bad_options_are_refused_by_name(keyword, value, error):
    with pytest.raises(error, match=keyword.split("_options")[0] if keyword != "verify" else "verify"):
        CompileOptions.from_arguments(**{keyword: value})
