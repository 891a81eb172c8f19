"""Stitching: compile never mutates its input, shells share weights, in_place commits
only on success, shared modules compile once, errors and fallbacks are explained."""

import warnings

import pytest
import torch
from modules import AddOne, Branch, TracedBranch
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


# --------------------------------------------------------------------------
# tiny modules (no `from __future__ import annotations`: TorchScript reads these)
# --------------------------------------------------------------------------


@ts.compile_mode("trace")
class TracedLinear(nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.lin = nn.Linear(n, n)

    def forward(self, x):
        return torch.relu(self.lin(x)) + 0.5


@ts.compile_mode("script")
class ScriptedBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.lin(x) * 2.0
        return self.lin(x) - 3.0


class Mixed(nn.Module):
    """Scripted parent (by ts.script) with a data-dependent `if` and a traced child."""

    def __init__(self):
        super().__init__()
        self.traced = TracedLinear()
        self.other = nn.Linear(3, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.traced(x) * 3.0
        return self.other(x) - self.traced(-x)


@ts.compile_mode("script")
class Unscriptable(nn.Module):
    """A lambda in forward: torch.jit.script rejects it, tracing is fine."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        f = lambda t: t * 2.0  # noqa: E731
        return f(self.lin(x))


class Mid(nn.Module):
    def __init__(self, deep):
        super().__init__()
        self.pre = nn.Linear(3, 3)
        self.deep = deep

    def forward(self, x):
        return self.deep(self.pre(x))


class Outer(nn.Module):
    """`first` (traced) compiles before `mid.deep` in post-order."""

    def __init__(self, deep):
        super().__init__()
        self.first = TracedLinear()
        self.mid = Mid(deep)

    def forward(self, x):
        return self.mid(self.first(x))


class TwoPaths(nn.Module):
    def __init__(self, shared):
        super().__init__()
        self.a = shared
        self.b = shared
        self.c = nn.Linear(3, 3)

    def forward(self, x):
        return self.b(self.c(self.a(x)))


@ts.compile_mode("script")
class Loopy(nn.Module):
    """A for loop and a data-dependent `if`: must survive inside a traced parent."""

    def forward(self, x):
        out = x
        for i in range(3):
            if out.sum() > 0:
                out = out * 2.0 + float(i)
            else:
                out = out - 10.0
        return out


class TracedParent(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((3,), 1.5))
        self.child = Loopy()

    def forward(self, x):
        return self.child(x * self.scale) + 1.0


class TwoMethods(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x).tanh()

    def twice(self, x):
        return self.lin(x) * 2.0


class FallbackParent(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = Unscriptable()
        self.post = nn.Linear(3, 3)

    def forward(self, x):
        return self.post(self.child(x))


def x_pos():
    return torch.rand(4, 3) + 0.1


def x_neg():
    return -torch.rand(4, 3) - 0.1


def _no_overloads(module):
    for name, sub in module.named_modules():
        assert "__overloads__" not in sub.__dict__, f"__overloads__ added to {name or '<root>'}"


def script_root():
    return ts.Claim("script", ts.ClaimKind.OVERRIDE, "test", "root scripted by the test")


# --------------------------------------------------------------------------
# compile never changes its input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["script", "compile", "trace"])
def test_compile_never_changes_its_input(watch, entry):
    model = Mixed()
    check = watch(model)
    x = x_pos()
    if entry == "script":
        compiled = ts.script(model, example_inputs=(x,))
    elif entry == "compile":
        compiled = ts.compile(model, example_inputs=(x,))
    else:
        compiled = ts.trace(model, (x,))
    check()
    _no_overloads(model)
    assert compiled is not model
    assert isinstance(model.traced, TracedLinear)  # not replaced by its compiled form
    assert not isinstance(model, torch.jit.ScriptModule)
    torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_compile_does_not_add_overloads_to_any_submodule():
    model = Outer(ScriptedBranch())
    ts.script(model, example_inputs=(x_pos(),))
    _no_overloads(model)
    # the same compile outside torchstitch does add it: the check above can fail
    plain = Outer(ScriptedBranch())
    torch.jit.script(plain)
    assert "__overloads__" in plain.__dict__


def test_compiled_model_shares_parameter_storage():
    model = Outer(ScriptedBranch())
    x = x_pos()
    compiled = ts.script(model, example_inputs=(x,))
    assert isinstance(compiled, torch.jit.ScriptModule)
    original = dict(model.named_parameters())
    seen = dict(compiled.named_parameters())
    assert seen.keys() == original.keys()
    for name, param in seen.items():
        assert param.data_ptr() == original[name].data_ptr(), f"{name} was copied"
    # a change to the user's weights shows in the compiled model (no second copy)
    with torch.no_grad():
        model.first.lin.bias.add_(1.0)
    torch.testing.assert_close(compiled(x), model(x))


def test_compiled_submodules_share_storage_with_python_root():
    model = Outer(ScriptedBranch())
    compiled = ts.compile(model, example_inputs=(x_pos(),))
    assert not isinstance(compiled, torch.jit.ScriptModule)
    assert isinstance(compiled.first, torch.jit.ScriptModule)
    assert isinstance(compiled.mid.deep, torch.jit.ScriptModule)
    original = dict(model.named_parameters())
    seen = dict(compiled.named_parameters())
    assert seen.keys() == original.keys()
    for name, param in seen.items():
        assert param.data_ptr() == original[name].data_ptr(), f"{name} was copied"


# --------------------------------------------------------------------------
# in_place
# --------------------------------------------------------------------------


def test_in_place_commits_compiled_children_on_success():
    model = Outer(ScriptedBranch())
    x, y = x_pos(), x_neg()
    expected_x, expected_y = model(x), model(y)
    first, mid = model.first, model.mid
    params = {name: p.data_ptr() for name, p in model.named_parameters()}

    compiled = ts.compile(model, example_inputs=(x,), in_place=True)

    assert compiled is model  # the root stayed in Python: it is the user's module
    assert model.mid is mid  # an unclaimed module keeps its identity
    assert isinstance(model.first, torch.jit.ScriptModule) and model.first is not first
    assert isinstance(model.mid.deep, torch.jit.ScriptModule)
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == params
    torch.testing.assert_close(model(x), expected_x)
    torch.testing.assert_close(model(y), expected_y)


def test_in_place_with_scripted_root_swaps_children():
    model = Outer(ScriptedBranch())
    x = x_pos()
    expected = model(x)
    compiled = ts.script(model, example_inputs=(x,), in_place=True)
    assert isinstance(compiled, torch.jit.ScriptModule)
    assert isinstance(model.first, torch.jit.ScriptModule)
    assert isinstance(model.mid.deep, torch.jit.ScriptModule)
    torch.testing.assert_close(compiled(x), expected)
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("in_place", [False, True])
def test_failure_deep_in_the_tree_leaves_model_unchanged(watch, in_place):
    model = Outer(Unscriptable())
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(x_pos(),), in_place=in_place)
    assert info.value.path == "mid.deep"
    assert "'mid.deep'" in str(info.value)
    check()
    _no_overloads(model)
    assert isinstance(model.first, TracedLinear)  # compiled before the failure, not committed


class WrongRootPlugin:
    """A strategy that returns a wrong module and skips node verification: only the
    root's verification on example_inputs can catch it."""

    name = "wrong-root"

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_wrong(module, context):
            return AddOne(module)

        return [ts.Strategy(name="wrong", family="python", compile=compile_wrong)]


@pytest.mark.parametrize("in_place", [False, True])
def test_verification_error_at_root_leaves_model_unchanged(watch, in_place):
    model = Outer(ScriptedBranch())
    check = watch(model)
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(
            model,
            example_inputs=(x_pos(),),
            rules=[ts.Rule("wrong", path="")],
            plugins=[WrongRootPlugin()],
            in_place=in_place,
        )
    assert info.value.path == ""
    assert "'<root>'" in str(info.value)
    assert info.value.max_abs_diff == pytest.approx(1.0)
    check()
    _no_overloads(model)
    assert isinstance(model.first, TracedLinear)
    assert isinstance(model.mid.deep, ScriptedBranch)


# --------------------------------------------------------------------------
# a module reachable by two paths
# --------------------------------------------------------------------------


def test_shared_module_compiled_once_and_stitched_at_both_paths(monkeypatch):
    calls = []
    real = torch.jit.trace_module

    def counting(module, *args, **kwargs):
        calls.append(type(module).__name__)
        return real(module, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace_module", counting)
    shared = TracedLinear()
    model = TwoPaths(shared)
    x = x_pos()
    expected = model(x)

    result = ts.Engine().compile(model, example_inputs=(x,))

    assert calls == ["TracedLinear"]
    assert isinstance(result.module.a, torch.jit.ScriptModule)
    assert result.module.a is result.module.b
    assert result.plan["b"].shared_with == "a"
    torch.testing.assert_close(result.module(x), expected)
    # weight sharing survives: one parameter tensor behind both paths
    assert result.module.a.lin.weight.data_ptr() == shared.lin.weight.data_ptr()


class CountingPlugin:
    """A strategy that counts its compile calls and traces."""

    name = "counting"

    def __init__(self):
        self.compiled = []

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_counting(module, context):
            self.compiled.append(context.node.path)
            return torch.jit.trace_module(module, context.inputs[0])

        return [
            ts.Strategy(
                name="counting",
                family="torchscript",
                compile=compile_counting,
                needs_inputs=True,
                verify=True,
            )
        ]


def test_shared_module_compiled_once_counting_strategy_in_scripted_parent():
    plugin = CountingPlugin()
    shared = nn.Linear(3, 3)
    model = TwoPaths(shared)
    x = x_pos()
    expected = model(x)
    result = ts.Engine(rules=[ts.Rule("counting", type=nn.Linear, path="[ab]")], plugins=[plugin]).compile(
        model, example_inputs=(x,), root_strategy=script_root()
    )
    assert plugin.compiled == ["a"]
    assert isinstance(result.module, torch.jit.ScriptModule)
    torch.testing.assert_close(result.module(x), expected)
    params = dict(result.module.named_parameters())
    assert params["a.weight"].data_ptr() == shared.weight.data_ptr()


def test_shared_module_in_place_same_object_at_both_paths():
    shared = TracedLinear()
    model = TwoPaths(shared)
    x = x_pos()
    expected = model(x)
    ts.compile(model, example_inputs=(x,), in_place=True)
    assert isinstance(model.a, torch.jit.ScriptModule)
    assert model.a is model.b
    torch.testing.assert_close(model(x), expected)


# --------------------------------------------------------------------------
# mixed model: scripted parent with a data-dependent if, traced child
# --------------------------------------------------------------------------


def test_mixed_model_equals_eager_on_both_branches():
    model = Mixed()
    compiled = ts.script(model, example_inputs=(x_pos(),))
    assert isinstance(compiled, torch.jit.ScriptModule)
    assert isinstance(compiled.traced, torch.jit.ScriptModule)
    inputs = [x_pos(), x_neg(), x_pos() * 3.0, x_neg() * 0.5, torch.randn(5, 3)]
    assert any(float(x.sum()) > 0 for x in inputs) and any(float(x.sum()) <= 0 for x in inputs)
    for x in inputs:
        torch.testing.assert_close(compiled(x), model(x))
    # the two branches really differ (so a frozen branch would be caught)
    x = x_pos()
    assert not torch.allclose(model.traced(x) * 3.0, model.other(x) - model.traced(-x))


# --------------------------------------------------------------------------
# Engine / CompileResult
# --------------------------------------------------------------------------


def test_engine_compile_returns_compile_result_with_outcomes():
    model = Mixed()
    x = x_pos()
    result = ts.Engine().compile(model, example_inputs=(x,), root_strategy=script_root())
    assert isinstance(result, ts.CompileResult)
    assert isinstance(result.module, torch.jit.ScriptModule)
    assert isinstance(result.plan, ts.Plan)
    assert result.seconds > 0

    child = result.plan["traced"].outcome
    assert child is not None
    assert child.seconds > 0
    assert child.inputs_source == "inputs.recorded"
    assert child.n_verified >= 1
    assert child.max_abs_diff is not None and child.max_abs_diff <= 1e-5

    root = result.plan[""].outcome
    assert root is not None and root.seconds > 0
    assert root.inputs_source is None  # script needs no tracing inputs
    assert root.n_verified == 1  # verified on example_inputs
    assert result.plan["other"].outcome is None  # inherited, compiled as part of the root

    assert set(result.timings) == {"", "traced"}
    assert all(t > 0 for t in result.timings.values())
    assert set(result.verification) == {"", "traced"}
    assert all(0.0 <= d <= 1e-5 for d in result.verification.values())
    assert result.fallbacks == {}
    torch.testing.assert_close(result.module(x), model(x))


def test_engine_is_reusable():
    engine = ts.Engine()
    for _ in range(2):
        model = Outer(ScriptedBranch())
        x = x_pos()
        result = engine.compile(model, example_inputs=(x,))
        torch.testing.assert_close(result.module(x), model(x))
        assert result.plan["first"].outcome.inputs_source == "inputs.recorded"


# --------------------------------------------------------------------------
# NodeCompileError
# --------------------------------------------------------------------------


def test_node_compile_error_when_scripting_fails(watch):
    model = Outer(Unscriptable())
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(x_pos(),))
    err = info.value
    assert err.path == "mid.deep"
    assert err.strategy == "script"
    assert err.claimant == f"@compile_mode on {Unscriptable.__module__}.Unscriptable"
    text = str(err)
    assert "'mid.deep'" in text
    assert "strategy 'script'" in text
    assert "@compile_mode on" in text and "Unscriptable" in text
    assert err.__cause__ is not None
    assert not isinstance(err.__cause__, ts.StitchError)
    check()


def test_node_compile_error_at_root_without_example_inputs(watch):
    model = Unscriptable()
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model)
    assert info.value.path == ""
    assert "'<root>'" in str(info.value)
    assert info.value.__cause__ is not None
    check()


# --------------------------------------------------------------------------
# ts.trace with a scripted child: control flow survives
# --------------------------------------------------------------------------


def test_trace_keeps_scripted_child_control_flow(watch):
    model = TracedParent()
    check = watch(model)
    compiled = ts.trace(model, (x_pos(),))
    check()
    assert isinstance(compiled, torch.jit.ScriptModule)
    assert isinstance(compiled.child, torch.jit.ScriptModule)
    pos, neg = x_pos(), x_neg()
    # different inputs take different branches in eager ...
    torch.testing.assert_close(model(pos), pos * 1.5 * 8.0 + 5.0)
    torch.testing.assert_close(model(neg), neg * 1.5 - 29.0)
    # ... and the traced parent follows them
    for x in (pos, neg, x_pos() * 2.0, x_neg() * 4.0):
        torch.testing.assert_close(compiled(x), model(x))


def test_trace_without_the_scripted_child_would_freeze_the_branch():
    """The contrast that makes the test above meaningful: plain tracing freezes the branch."""
    model = TracedParent()
    ts.set_compile_mode(model.child, None)
    try:
        with pytest.raises(ts.VerificationError) as info:
            ts.trace(model, (x_pos(),), check_inputs=[(x_neg(),)])
    finally:
        ts.set_compile_mode(model.child, "script")
    assert info.value.path == ""
    assert "'<root>'" in str(info.value)


def test_trace_root_with_check_inputs_catches_frozen_branch(watch):
    model = Branch()
    check = watch(model)
    with pytest.raises(ts.VerificationError) as info:
        ts.trace(model, (x_pos(),), check_inputs=[(x_neg(),)])
    assert info.value.path == ""
    assert "'<root>'" in str(info.value)
    assert info.value.max_abs_diff > 0
    check()


# --------------------------------------------------------------------------
# ts.trace_module
# --------------------------------------------------------------------------


def test_trace_module_traces_every_method(watch):
    model = TwoMethods()
    check = watch(model)
    x = torch.randn(4, 3)
    compiled = ts.trace_module(model, {"forward": (x,), "twice": (x,)})
    check()
    assert isinstance(compiled, torch.jit.ScriptModule)
    for y in (x, torch.randn(2, 3)):
        torch.testing.assert_close(compiled(y), model(y))
        torch.testing.assert_close(compiled.twice(y), model.twice(y))


def test_trace_module_with_traced_child_path_inputs():
    model = Outer(ScriptedBranch())
    x = x_pos()
    compiled = ts.trace_module(model, {"forward": (x,)})
    assert isinstance(compiled, torch.jit.ScriptModule)
    torch.testing.assert_close(compiled(x), model(x))


# --------------------------------------------------------------------------
# on_error
# --------------------------------------------------------------------------


def test_fallback_script_to_trace(watch):
    model = FallbackParent()
    check = watch(model)
    x = x_pos()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = ts.Engine(on_error="fallback").compile(model, example_inputs=(x,))
    check()
    fell = [
        w
        for w in record
        if issubclass(w.category, ts.TorchstitchWarning)
        and not issubclass(w.category, ts.TorchScriptDeprecationWarning)
    ]
    assert len(fell) == 1
    assert "child" in str(fell[0].message)

    assert set(result.fallbacks) == {"child"}
    attempts = result.fallbacks["child"]
    assert [a.strategy for a in attempts] == ["script", "trace"]
    assert attempts[0].error_type == "NodeCompileError"
    assert attempts[0].error
    assert attempts[1].error_type is None
    outcome = result.plan["child"].outcome
    assert outcome.attempts == attempts
    assert outcome.inputs_source == "inputs.recorded"
    assert isinstance(result.module.child, torch.jit.ScriptModule)
    for y in (x, x_neg(), torch.randn(2, 3)):
        torch.testing.assert_close(result.module(y), model(y))


def test_fallback_through_compile_warns():
    model = FallbackParent()
    x = x_pos()
    with pytest.warns(ts.TorchstitchWarning, match="fell back"):
        compiled = ts.compile(model, example_inputs=(x,), on_error="fallback")
    torch.testing.assert_close(compiled(x), model(x))


def test_without_fallback_the_same_model_raises(watch):
    model = FallbackParent()
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(x_pos(),))
    assert info.value.path == "child"
    assert "'child'" in str(info.value)
    check()


@pytest.mark.parametrize("bad", ["ignore", "Fallback", None, ""])
def test_invalid_on_error_is_value_error(bad):
    with pytest.raises(ValueError, match="on_error"):
        ts.Engine(on_error=bad)
    model = Mixed()
    with pytest.raises(ValueError, match="on_error"):
        ts.compile(model, example_inputs=(x_pos(),), on_error=bad)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_invalid_n_trace_checks_is_value_error(watch, bad):
    model = Mixed()
    check = watch(model)
    with pytest.raises(ValueError, match="n_trace_checks"):
        ts.compile(model, example_inputs=(x_pos(),), n_trace_checks=bad)
    with pytest.raises(ValueError, match="n_trace_checks"):
        ts.Engine(n_trace_checks=bad)
    check()


def test_fallback_trace_to_script_when_no_inputs():
    model = Outer(ScriptedBranch())
    with pytest.warns(ts.TorchstitchWarning, match="fell back"):
        result = ts.Engine(on_error="fallback").compile(model)  # no example_inputs
    attempts = result.fallbacks["first"]
    assert [a.strategy for a in attempts] == ["trace", "script"]
    assert attempts[0].error_type == "TracingInputsError"
    assert attempts[1].error_type is None
    assert isinstance(result.module.first, torch.jit.ScriptModule)
    for x in (x_pos(), x_neg()):
        torch.testing.assert_close(result.module(x), model(x))


class BothSigns(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = TracedBranch()

    def forward(self, x):
        return self.child(x) + self.child(-x)


def test_fallback_trace_to_script_on_verification_error(watch):
    model = BothSigns()
    check = watch(model)
    x = x_pos()
    with pytest.warns(ts.TorchstitchWarning, match="fell back"):
        result = ts.Engine(on_error="fallback").compile(model, example_inputs=(x,))
    check()
    attempts = result.fallbacks["child"]
    assert [a.strategy for a in attempts] == ["trace", "script"]
    assert attempts[0].error_type == "VerificationError"
    for y in (x, x_neg(), torch.randn(3, 3)):
        torch.testing.assert_close(result.module(y), model(y))
        torch.testing.assert_close(result.module.child(y), model.child(y))


def test_fallback_every_strategy_fails_left_to_parent(watch):
    model = FallbackParent()
    check = watch(model)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = ts.Engine(on_error="fallback").compile(model)  # trace has no inputs either
    check()
    attempts = result.fallbacks["child"]
    assert [(a.strategy, a.error_type) for a in attempts] == [
        ("script", "NodeCompileError"),
        ("trace", "TracingInputsError"),
    ]
    fell = [w for w in record if "fell back" in str(w.message)]
    assert len(fell) == 1 and "left to its parent" in str(fell[0].message)
    assert not isinstance(result.module.child, torch.jit.ScriptModule)
    x = x_pos()
    torch.testing.assert_close(result.module(x), model(x))


def test_fallback_every_strategy_fails_at_root_raises(watch):
    model = Unscriptable()
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, on_error="fallback")
    assert info.value.path == ""
    assert "'<root>'" in str(info.value)
    assert info.value.__cause__ is not None
    check()
