"""on_error="fallback" bookkeeping, and culprit localisation of a whole-model mismatch.

tests/core/test_engine.py covers which strategies a fallback tries and that it warns;
here: what each attempt records (strategy, error type, first line, seconds) in
CompileResult.fallbacks, in the plan (JSON and text) and in the root's error when all
fail; then, for a deliberately wrong strategy deep in a tree, that the VerificationError
at '<root>' names exactly the deepest wrong nodes, and that ts.locate agrees (ts.locate on
its own: tests/core/test_locate.py).
"""

import warnings

import pytest
import torch
from modules import Block, Leaf, Model, Unscriptable, plus_half, x4
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


# --------------------------------------------------------------------------
# modules (no `from __future__ import annotations`: TorchScript reads these)
# --------------------------------------------------------------------------


class ParamLeaf(nn.Module):
    """A leaf with its own parameters and no submodules."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4) * 0.5)

    def forward(self, x):
        return torch.tanh(x @ self.weight)


@ts.compile_mode("trace")
class Traced(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.lin(x))


# --------------------------------------------------------------------------
# test plugins
# --------------------------------------------------------------------------


class WrongPlugin:
    """Strategy ``wrong``: traces the module and adds 0.5.  ``verify`` says whether node
    verification checks it; without, only the root's verification can notice."""

    name = "wrong-plugin"

    def __init__(self, verify=False, fallbacks=()):
        self.verify = verify
        self.fallbacks = fallbacks

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_wrong(module, context):
            return torch.jit.trace_module(plus_half(module), context.inputs[0], check_trace=False)

        return [
            ts.Strategy(
                name="wrong",
                family="torchscript",
                compile=compile_wrong,
                needs_inputs=True,
                verify=self.verify,
                fallbacks=self.fallbacks,
            )
        ]


class FailPlugin:
    """Strategy ``fail`` (no fallbacks): always raises."""

    name = "fail-plugin"

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_fail(module, context):
            raise RuntimeError("fail always fails\nsecond line")

        return [ts.Strategy(name="fail", family="torchscript", compile=compile_fail)]


def _fallback(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ts.TorchstitchWarning)
        return ts.Engine(on_error="fallback", **kw).compile(model, example_inputs=(x4(),))


def _first_line_of_raise(model, **kw):
    """The first line of the error the same call raises without fallback."""
    with pytest.raises(ts.StitchError) as info:
        ts.Engine(**kw).compile(model, example_inputs=(x4(),))
    return type(info.value).__name__, info.value.message.splitlines()[0]


# --------------------------------------------------------------------------
# on_error="fallback": what is recorded
# --------------------------------------------------------------------------


def test_each_attempt_records_strategy_error_type_first_line_and_seconds(watch):
    model = Model(left=Block(a=Unscriptable()), right=Block(a=Traced()))
    check = watch(model)
    result = _fallback(model)
    check()
    assert set(result.fallbacks) == {"left.a"}  # right.a compiled on its first try
    failed, succeeded = result.fallbacks["left.a"]
    assert (failed.strategy, succeeded.strategy) == ("script", "trace")
    assert (failed.error_type, failed.error) == _first_line_of_raise(model)
    assert "\n" not in failed.error and "Lambda" in failed.error
    assert failed.seconds > 0.0
    assert succeeded.error_type is None and succeeded.error is None
    assert succeeded.seconds == result.plan["left.a"].outcome.seconds > 0.0
    # a node that did not fall back records its one successful attempt
    (only,) = result.plan["right.a"].outcome.attempts
    assert only.strategy == "trace" and only.error_type is None
    x = x4()
    torch.testing.assert_close(result.module(x), model(x))


def test_attempts_are_in_the_plan_its_json_and_its_text():
    model = Model(left=Block(a=Unscriptable()))
    result = _fallback(model)
    node = result.plan["left.a"]
    assert node.outcome.attempts == result.fallbacks["left.a"]
    again = ts.Plan.from_json(result.plan.to_json())
    assert again["left.a"].outcome.attempts == node.outcome.attempts
    lines = [ln for ln in result.plan.render().splitlines() if "fell back" in ln]
    assert len(lines) == 1
    assert "a (" in lines[0] and "Unscriptable" in lines[0]
    assert "fell back: script failed (NodeCompileError)" in lines[0]


def test_verification_failure_falls_back_and_is_recorded(watch):
    model = Model()
    check = watch(model)
    result = _fallback(
        model,
        rules=[ts.Rule("wrong", path="right.b")],
        plugins=[WrongPlugin(verify=True, fallbacks=("script",))],
    )
    check()
    failed, succeeded = result.fallbacks["right.b"]
    assert (failed.strategy, failed.error_type) == ("wrong", "VerificationError")
    assert "differs from eager" in failed.error
    assert succeeded.strategy == "script"
    assert "fell back: wrong failed (VerificationError)" in result.plan.render()
    x = x4()
    torch.testing.assert_close(result.module(x), model(x))


def test_a_strategy_without_fallbacks_is_left_to_its_parent_with_one_attempt(watch):
    model = Model()
    check = watch(model)
    result = _fallback(model, rules=[ts.Rule("fail", path="left.b")], plugins=[FailPlugin()])
    check()
    (attempt,) = result.fallbacks["left.b"]
    assert attempt.strategy == "fail"
    assert attempt.error_type == "NodeCompileError"
    assert "fail always fails" in attempt.error and "second line" not in attempt.error
    assert attempt.seconds > 0.0
    assert type(result.module.left.b) is Leaf  # left in Python, in its parent's (Python) shell
    x = x4()
    torch.testing.assert_close(result.module(x), model(x))


def test_every_node_that_fell_back_is_recorded_and_warned_about(watch):
    model = Model(left=Block(a=Unscriptable()), right=Block(b=Unscriptable()))
    check = watch(model)
    with pytest.warns(ts.TorchstitchWarning, match="2 node") as record:
        result = ts.Engine(on_error="fallback").compile(model, example_inputs=(x4(),))
    check()
    assert set(result.fallbacks) == {"left.a", "right.b"}
    message = next(str(w.message) for w in record if "fell back" in str(w.message))
    assert "left.a (script -> trace)" in message and "right.b (script -> trace)" in message


def test_every_attempt_failing_at_the_root_lists_them_all(watch):
    model = Unscriptable()  # script fails; trace has no inputs
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, on_error="fallback")
    err = info.value
    text = str(err)
    assert err.path == "" and "'<root>'" in text
    assert err.strategy == "script"
    assert "every strategy failed" in text
    script_at = text.index("script: NodeCompileError: ")
    trace_at = text.index("trace: TracingInputsError: ")
    assert script_at < trace_at
    assert "Lambda" in text[script_at:trace_at]
    assert isinstance(err.__cause__, ts.TracingInputsError)  # the last attempt's error
    check()


def test_every_attempt_failing_at_the_root_in_place_leaves_the_model(watch):
    model = Model(left=Block(a=Traced()))
    ts.set_compile_mode(model, "script")
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(
            model,
            rules=[ts.Rule("fail", path="")],
            plugins=[FailPlugin()],
            example_inputs=(x4(),),
            on_error="fallback",
            in_place=True,
        )
    assert "fail: NodeCompileError: " in str(info.value)
    assert isinstance(info.value.__cause__, ts.NodeCompileError)
    check()
    assert type(model.left.a) is Traced  # compiled before the root failed, never committed


# --------------------------------------------------------------------------
# culprit localisation
# --------------------------------------------------------------------------


def _culprits(model, rules, x):
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(model, example_inputs=(x,), rules=rules, plugins=[WrongPlugin()])
    err = info.value
    assert err.path == "" and "'<root>'" in str(err)
    assert all(isinstance(c, ts.Divergence) for c in err.culprits)
    return err


def _compiled_without_verification(model, rules, x):
    return ts.Engine(rules=rules, plugins=[WrongPlugin()], verify=False).compile(model, example_inputs=(x,))


def _compiled_paths(result):
    return [n.path for n in result.plan.walk() if n.strategy is not None and n.outcome is not None]


SCENARIOS = {
    # name: (model factory, rules, expected culprits)
    "two-branches": (
        Model,
        [ts.Rule("wrong", path="left.a"), ts.Rule("wrong", path="right.b")],
        ["left.a", "right.b"],
    ),
    "child-under-wrong-parent": (
        Model,
        [ts.Rule("wrong", path="left.b"), ts.Rule("wrong", path="left")],
        ["left.b"],
    ),
    "wrong-root-and-deep-child": (
        Model,
        [ts.Rule("wrong", path=""), ts.Rule("wrong", path="right.a")],
        ["right.a"],
    ),
    "wrong-among-correct": (
        lambda: Model(left=Block(a=Traced())),
        [ts.Rule("wrong", path="right.a"), ts.Rule("script", path="right.b"), ts.Rule("script", path="left")],
        ["right.a"],
    ),
    "wrong-parent-of-correct-children": (
        lambda: Model(left=Block(a=Traced())),
        [ts.Rule("wrong", path="left")],
        ["left"],
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_culprits_are_exactly_the_deepest_wrong_nodes(scenario, watch):
    factory, rules, expected = SCENARIOS[scenario]
    model = factory()
    check = watch(model)
    err = _culprits(model, rules, x4())
    check()
    assert sorted(c.path for c in err.culprits) == expected
    for culprit in err.culprits:
        assert f"{culprit.path}: " in str(err)
        assert culprit.max_abs_diff == pytest.approx(0.5, abs=1e-5) or culprit.max_abs_diff > 0.5


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_locate_with_the_compiled_paths_agrees(scenario):
    factory, rules, expected = SCENARIOS[scenario]
    model = factory()
    x = x4()
    result = _compiled_without_verification(model, rules, x)
    found = ts.locate(model, result.module, (x,), paths=_compiled_paths(result))
    assert sorted(d.path for d in found) == expected


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([ts.Rule("wrong", path="left.a"), ts.Rule("wrong", path="right.b")], ["left.a", "right.b"]),
        (
            # left.a is compiled on its own (correctly): a traced parent's inherited
            # submodules cannot be called on their own
            [
                ts.Rule("wrong", path="left.b"),
                ts.Rule("wrong", path="left"),
                ts.Rule("script", path="left.a"),
            ],
            ["left.b"],
        ),
    ],
    ids=["two-branches", "child-under-wrong-parent"],
)
def test_standalone_locate_agrees_on_pieces_without_submodules(rules, expected, watch):
    model = Model(left=Block(ParamLeaf(), ParamLeaf()), right=Block(ParamLeaf(), ParamLeaf()))
    x = x4()
    err = _culprits(model, rules, x)
    assert sorted(c.path for c in err.culprits) == expected
    compiled = _compiled_without_verification(model, rules, x).module
    check = watch(model)
    found = ts.locate(model, compiled, x)
    check()
    assert sorted(d.path for d in found) == expected
    assert [str(d) for d in found] == [str(c) for c in err.culprits]


@pytest.mark.parametrize("scenario", ["two-branches", "child-under-wrong-parent"])
def test_standalone_locate_agrees_with_the_engine(scenario):
    factory, rules, expected = SCENARIOS[scenario]
    model = factory()
    x = x4()
    compiled = _compiled_without_verification(model, rules, x).module
    assert sorted(d.path for d in ts.locate(model, compiled, (x,))) == expected
