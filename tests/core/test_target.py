"""compile(target=...): one annotated model, several artifact families."""

import pytest
import torch

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class Retrace:
    """A stand-in 'other family' strategy that replaces trace claims (traces, tagged)."""

    name = "retrace"

    def __init__(self):
        self.compiled = []

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile(module, context):
            self.compiled.append(context.node.path)
            return torch.jit.trace_module(module, context.inputs[0], check_trace=False)

        return [
            ts.Strategy(
                "retrace",
                "fake",
                compile,
                needs_inputs=True,
                verify=True,
                can_contain={"fake"},
                replaces={"trace"},
            )
        ]


@ts.compile_mode("trace")
class Leaf(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x))


@ts.compile_mode("script")
class Branchy(torch.nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x
        return -x


class Model(torch.nn.Module):
    def __init__(self, branchy=False):
        super().__init__()
        self.a = Leaf()
        self.b = Leaf()
        self.c = Branchy() if branchy else torch.nn.Identity()

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_trace_claims_are_retargeted_and_compiled_by_the_target_strategy(watch):
    model = Model()
    check = watch(model)
    plugin = Retrace()
    x = torch.randn(4, 3)
    result = ts.Engine(plugins=[plugin], target="fake").compile(model, example_inputs=(x,))

    assert result.plan["a"].strategy == "retrace"
    assert result.plan["a"].claim.kind is ts.ClaimKind.DECORATOR
    assert "retargeted to 'fake'" in result.plan["a"].claim.reason
    # nothing claims the root and both claims can go to the target: the root goes too
    assert result.plan[""].strategy == "retrace"
    assert result.plan[""].claim.kind is ts.ClaimKind.DEFAULT
    assert sorted(plugin.compiled) == ["", "a", "b"]
    torch.testing.assert_close(result.module(x), model(x))
    check()


class KeepsOneInPython(Model):
    def __init__(self):
        super().__init__()
        self.c = ts.compile_mode("unsupported")(type("Kept", (torch.nn.Identity,), {}))()


def test_a_root_holding_an_unsupported_module_stays_in_python():
    plan = ts.plan(KeepsOneInPython(), plugins=[Retrace()], target="fake")
    assert plan[""].claim is None and plan["a"].strategy == "retrace"


def test_a_rule_leaving_the_root_in_python_is_obeyed():
    plan = ts.plan(Model(), plugins=[Retrace()], target="fake", rules=[ts.Rule(None, path="")])
    assert plan[""].claim is None and plan["a"].strategy == "retrace"


def test_nodes_with_no_stand_in_are_listed_by_path_before_compiling(watch):
    model = Model(branchy=True)
    check = watch(model)
    plugin = Retrace()
    with pytest.raises(
        ts.PlanError, match=r"cannot go to target 'fake':\n  c: 'script' claimed by @compile_mode"
    ) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),), plugins=[plugin], target="fake")
    assert info.value.path == "c"
    assert "torch.cond" in str(info.value)
    assert plugin.compiled == []
    check()


def test_unknown_target_lists_families():
    with pytest.raises(ts.PlanError, match=r"unknown target 'nope'.*'torchscript'"):
        ts.plan(Model(), target="nope")
