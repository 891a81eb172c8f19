"""The functional API (core/api.py) as a newcomer meets it: a model nothing claims is
not compiled silently, tolerances reach verification from every entry point and from a
strategy, the plan counts distinct inputs, ``ts.plan`` previews ``compile``'s plan, and
torch's advice for strict tracing is said in torchstitch's terms."""

import copy
import inspect
import warnings

import pytest
import torch
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


# --------------------------------------------------------------------------
# tiny modules (no `from __future__ import annotations`: TorchScript reads these)
# --------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x) * 2.0


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(3, 3)
        self.block = Block()

    def forward(self, x):
        return self.block(torch.tanh(self.pre(x)))


@ts.compile_mode("trace")
class TracedBlock(Block):
    pass


class WithTraced(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(3, 3)
        self.block = TracedBlock()

    def forward(self, x):
        return self.block(self.pre(x))


class InBF16(nn.Module):
    """Runs ``inner`` in bfloat16 on float32 inputs, answering in float32."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.to(torch.bfloat16)).to(torch.float32)


class ReturnsDict(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return {"y": self.lin(x)}


class ReadsDict(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = ReturnsDict()

    def forward(self, x):
        return self.head(x)["y"] + 1.0


def x3(batch=4):
    return torch.randn(batch, 3)


class BF16Plugin:
    """A strategy that scripts a bfloat16 copy of its node (``atol``/``rtol``: declared;
    ``check_node=False``: no check of its own, only the whole model's)."""

    name = "bf16-plugin"

    def __init__(self, atol=None, rtol=None, check_node=True):
        self.strategy = ts.Strategy(
            name="bf16",
            family="torchscript",
            compile=lambda module, context: torch.jit.script(
                InBF16(copy.deepcopy(module).to(torch.bfloat16))
            ),
            needs_inputs=check_node,
            verify=check_node,
            atol=atol,
            rtol=rtol,
        )

    @ts.hookimpl
    def torchstitch_strategies(self):
        return [self.strategy]


def nothing_compiled_warnings(caught):
    return [
        w for w in caught if issubclass(w.category, ts.TorchstitchWarning) and "nothing" in str(w.message)
    ]


# --------------------------------------------------------------------------
# item 13: a model nothing claims
# --------------------------------------------------------------------------


@pytest.mark.parametrize("example_inputs", [None, (x3(),)], ids=["bare", "example-inputs"])
def test_compile_of_a_model_nothing_claims_warns_once_with_the_ways_to_claim_the_root(example_inputs):
    model = Net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = ts.compile(model, example_inputs=example_inputs)
    (warning,) = nothing_compiled_warnings(caught)
    assert warning.filename == __file__  # points at the caller's line
    text = str(warning.message)
    for way in ("ts.script(", "ts.trace(", "root_strategy=", "rules="):
        assert way in text
    assert "Net" in text
    assert not isinstance(compiled, torch.jit.ScriptModule)
    x = x3()
    torch.testing.assert_close(compiled(x), model(x))


def test_engine_compile_warns_too_and_claimed_models_do_not():
    with pytest.warns(ts.TorchstitchWarning, match="nothing was compiled") as caught:
        ts.Engine().compile(Net())
    # no export plugin here (tests/core/conftest.py): the warning does not offer that road
    assert not any("target='export'" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ts.compile(WithTraced(), example_inputs=(x3(),))
        ts.script(Net())
    assert nothing_compiled_warnings(caught) == []


def test_only_claims_that_compile_nothing_still_warn():
    model = Net()
    ts.set_compile_mode(model.block, "unsupported")  # claimed, but stays in Python
    with pytest.warns(ts.TorchstitchWarning, match="nothing was compiled"):
        ts.compile(model)


def test_compile_takes_root_strategy():
    model = Net()
    x = x3()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = ts.compile(model, root_strategy="script", example_inputs=(x,))
    assert nothing_compiled_warnings(caught) == []
    assert isinstance(compiled, torch.jit.ScriptModule)
    torch.testing.assert_close(compiled(x), model(x))


def test_script_and_trace_refuse_root_strategy():
    with pytest.raises(TypeError, match="root_strategy= is for compile"):
        ts.script(Net(), root_strategy="trace")


# --------------------------------------------------------------------------
# item 15: tolerances
# --------------------------------------------------------------------------


def _via_compile(model, x, **kw):
    return ts.compile(model, root_strategy="script", example_inputs=(x,), **kw)


def _via_script(model, x, **kw):
    return ts.script(model, example_inputs=(x,), **kw)


def _via_trace(model, x, **kw):
    return ts.trace(model, (x,), **kw)


def _via_trace_module(model, x, **kw):
    return ts.trace_module(model, {"forward": (x,)}, **kw)


ENTRY_POINTS = [_via_compile, _via_script, _via_trace, _via_trace_module]
ENTRY_IDS = ["compile", "script", "trace", "trace_module"]
BLOCK_BF16 = [ts.Rule("bf16", path="block")]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=ENTRY_IDS)
def test_bf16_node_fails_the_default_tolerance_and_passes_the_callers(watch, entry):
    model = Net()
    x = x3()
    check = watch(model)
    with pytest.raises(ts.VerificationError) as info:
        entry(model, x, rules=BLOCK_BF16, plugins=[BF16Plugin()])
    assert info.value.path == "block" and "'block'" in str(info.value)
    check()
    compiled = entry(model, x, rules=BLOCK_BF16, plugins=[BF16Plugin()], atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(compiled(x), model(x), atol=5e-2, rtol=5e-2)
    assert model.block.lin.weight.dtype == torch.float32
    check()


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=ENTRY_IDS)
def test_strategy_tolerance_is_the_default_and_the_callers_wins(watch, entry):
    model = Net()
    x = x3()
    check = watch(model)
    declared = BF16Plugin(atol=5e-2, rtol=5e-2)
    compiled = entry(model, x, rules=BLOCK_BF16, plugins=[declared])
    torch.testing.assert_close(compiled(x), model(x), atol=5e-2, rtol=5e-2)
    with pytest.raises(ts.VerificationError) as info:
        entry(model, x, rules=BLOCK_BF16, plugins=[declared], atol=1e-6, rtol=1e-6)
    assert info.value.path == "block"
    check()


def test_root_verification_takes_the_loosest_tolerance_of_the_compiled_nodes():
    # the bf16 block skips its own check: only the whole model's comparison sees it
    model = Net()
    x = x3()
    plugin = BF16Plugin(atol=5e-2, rtol=5e-2, check_node=False)
    result = ts.Engine(rules=BLOCK_BF16, plugins=[plugin]).compile(
        model, example_inputs=(x,), root_strategy="script"
    )
    assert 0 < result.verification[""] <= 5e-2
    with pytest.raises(ts.VerificationError) as info:
        ts.Engine(rules=BLOCK_BF16, plugins=[plugin], atol=1e-6, rtol=1e-6).compile(
            model, example_inputs=(x,), root_strategy="script"
        )
    assert info.value.path == ""
    assert [c.path for c in info.value.culprits] == ["block"]


@pytest.mark.parametrize("bad", [-1.0, "0.1", True])
def test_strategy_tolerance_must_be_a_non_negative_number(bad):
    with pytest.raises(ValueError, match="Strategy.atol"):
        ts.Strategy(name="s", family="torchscript", compile=lambda m, c: m, atol=bad)


# --------------------------------------------------------------------------
# item 16: distinct inputs
# --------------------------------------------------------------------------


def test_one_example_input_is_verified_on_one():
    x = x3()
    result = ts.Engine().compile(Net(), example_inputs=(x,), root_strategy="trace")
    assert result.plan[""].outcome.n_verified == 1
    assert "verified on 1," in result.plan.render()


def test_other_inputs_than_example_inputs_count_once_each():
    x, other = x3(), x3(batch=2)
    result = ts.Engine().compile(
        Net(), example_inputs=(x,), inputs={"": [(other,)]}, root_strategy="trace"
    )  # traced on `other`, the whole model verified on `x`
    assert result.plan[""].outcome.n_verified == 2
    result = ts.Engine(n_trace_checks=2).compile(
        Net(), example_inputs=(x,), inputs={"": [(x.clone(),), (other,)]}, root_strategy="trace"
    )
    assert result.plan[""].outcome.n_verified == 2


# --------------------------------------------------------------------------
# item 17: ts.plan previews compile
# --------------------------------------------------------------------------


def _without_outcomes(data):
    if isinstance(data, dict):
        return {k: _without_outcomes(v) for k, v in data.items() if k != "outcome"}
    if isinstance(data, list):
        return [_without_outcomes(v) for v in data]
    return data


PLAN_ARGUMENTS = [
    dict(root_strategy="script"),
    dict(root_strategy="trace"),
    dict(root_strategy="script", recurse=False),
    dict(rules=[ts.Rule("script", path="block")]),
    dict(root_strategy="script", rules=[ts.Rule("bf16", path="block")], plugins=[BF16Plugin(0.05, 0.05)]),
    dict(root_strategy="script", plugins=["no:e3nn"], freeze=True),
]


@pytest.mark.parametrize("kw", PLAN_ARGUMENTS, ids=lambda kw: ",".join(sorted(kw)))
def test_plan_json_is_the_plan_compile_follows(kw):
    model = WithTraced().eval()
    x = x3()
    kw = dict(kw)
    root_strategy = kw.pop("root_strategy", None)
    previewed = ts.plan(model, example_inputs=(x,), root_strategy=root_strategy, **kw)
    compiled = ts.Engine(**kw).compile(model, example_inputs=(x,), root_strategy=root_strategy)
    assert any(n.outcome is not None for n in compiled.plan.walk())
    assert previewed.to_json() == ts.Plan.from_json(previewed.to_json()).to_json()
    assert _without_outcomes(previewed.to_dict()) == _without_outcomes(compiled.plan.to_dict())


def test_plan_takes_every_argument_of_compile_that_shapes_the_plan():
    shaping = {"rules", "recurse", "plugins", "target", "freeze"}
    engine_call = set(inspect.signature(ts.Engine.compile).parameters) - {"self"}
    assert engine_call == set(inspect.signature(ts.Engine.plan).parameters) - {"self"}
    assert shaping | engine_call <= set(inspect.signature(ts.plan).parameters)
    assert shaping | engine_call <= set(inspect.signature(ts.compile).parameters)


def test_plan_refuses_freeze_where_compile_would():
    model = Net()  # training mode: freeze needs eval
    with pytest.raises(ts.PlanError, match="eval mode") as info:
        ts.plan(model, root_strategy="script", freeze=True)
    assert info.value.path == ""
    with pytest.raises(ts.PlanError, match="eval mode"):
        ts.compile(model, root_strategy="script", freeze=True)


# --------------------------------------------------------------------------
# item 18: strict tracing
# --------------------------------------------------------------------------


def test_strict_trace_error_says_how_to_pass_strict_false(watch):
    model = ReadsDict()
    x = x3()
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(x,), rules=[ts.Rule("trace", path="head")])
    assert info.value.path == "head" and "'head'" in str(info.value)
    assert "trace_options={'strict': False}" in str(info.value)
    assert "pass strict=False to trace()" in str(info.value.__cause__.__cause__)
    check()
    compiled = ts.compile(
        model, example_inputs=(x,), rules=[ts.Rule("trace", path="head")], trace_options={"strict": False}
    )
    assert isinstance(compiled.head, torch.jit.ScriptModule)
    torch.testing.assert_close(compiled(x), model(x))
