"""The four seed scenarios of DESIGN.md, end to end."""

import pytest
import torch

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


# -- scenario 1: an e3nn Norm (traced) inside a scripted parent with a data-dependent if


def test_scenario_1_norm_traced_inside_scripted_parent(watch):
    o3 = pytest.importorskip("e3nn.o3")

    class NormThenBranch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = o3.Norm("4x0e + 2x1o")

        def forward(self, x):
            n = self.norm(x)
            if bool((n > 1.0).any()):
                return n * 2.0
            return n - 1.0

    model = NormThenBranch()
    check = watch(model)
    compiled = ts.script(model)

    assert isinstance(compiled, torch.jit.ScriptModule)
    for scale in (0.01, 10.0):  # both branches of the parent's if
        x = scale * torch.randn(7, 10)
        torch.testing.assert_close(compiled(x), model(x))
    check()

    result = ts.Engine().compile(
        model, root_strategy=ts.Claim("script", "override", "test"), example_inputs=(torch.randn(3, 10),)
    )
    plan = result.plan
    assert plan[""].strategy == "script"
    assert plan["norm"].strategy == "trace"
    assert plan["norm"].claim.kind is ts.ClaimKind.ATTRIBUTE
    assert plan["norm"].claim.claimant == "plugin e3nn"
    assert plan["norm"].outcome.inputs_source == "inputs.recorded"
    assert "norm (Norm): trace" in plan.render()
    assert "norm (e3nn.o3._norm.Norm): trace" in plan.render(verbose=True)
    check()


# -- scenario 2: a scripted child with a loop and a data-dependent if, inside a traced parent


@ts.compile_mode("script")
class LoopyChild(torch.nn.Module):
    def forward(self, x):
        for _ in range(3):
            if bool(x.sum() > 0):
                x = x - 1.0
            else:
                x = x * 2.0
        return x


class TracedParent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.child = LoopyChild()

    def forward(self, x):
        return self.child(self.lin(x))


def test_scenario_2_script_child_survives_trace(watch):
    model = TracedParent()
    check = watch(model)
    compiled = ts.trace(model, (torch.randn(2, 4),))

    assert isinstance(compiled, torch.jit.ScriptModule)
    assert isinstance(compiled.child, torch.jit.ScriptModule)
    taken = set()
    for shift in (-100.0, 100.0):  # drive the child's if both ways
        x = torch.randn(2, 4) + shift
        torch.testing.assert_close(compiled(x), model(x))
        taken.add(bool(model.lin(x).sum() > 0))
    assert taken == {True, False}
    check()


# -- scenario 3: a traced module with a LongTensor argument and _make_tracing_inputs


@ts.compile_mode("trace")
class Gather(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(5))

    def forward(self, x, indexes):
        return x[indexes] * self.weight[indexes]

    def _make_tracing_inputs(self, n):
        return [
            {"forward": (torch.randn(5), torch.randint(0, 5, (3 + i,), dtype=torch.long))} for i in range(n)
        ]


def test_scenario_3_trace_with_make_tracing_inputs(watch):
    model = Gather()
    check = watch(model)
    result = ts.Engine(n_trace_checks=2).compile(model)

    assert isinstance(result.module, torch.jit.ScriptModule)
    assert result.plan[""].outcome.inputs_source == "inputs.method"
    assert result.plan[""].outcome.n_verified == 2
    x, idx = torch.randn(5), torch.tensor([4, 0, 0, 2, 1, 3])
    torch.testing.assert_close(result.module(x, idx), model(x, idx))
    check()


# -- scenario 4: an unsupported child fails at plan time, naming its path


@ts.compile_mode("unsupported")
class NotCompilable(torch.nn.Module):
    def forward(self, x):
        return x + 1


class HoldsUnsupported(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ok = torch.nn.Linear(2, 2)
        self.inner = torch.nn.Sequential(torch.nn.ReLU(), NotCompilable())

    def forward(self, x):
        return self.inner(self.ok(x))


def test_scenario_4_unsupported_child_fails_before_compiling(watch, monkeypatch):
    model = HoldsUnsupported()
    check = watch(model)
    calls = []
    monkeypatch.setattr(torch.jit, "script", lambda *a, **k: calls.append(a))

    with pytest.raises(ts.UnsupportedModuleError, match=r"at 'inner\.1'") as info:
        ts.script(model)

    assert isinstance(info.value, NotImplementedError)
    assert info.value.path == "inner.1"
    assert info.value.strategy == "unsupported"
    assert "NotCompilable" in info.value.claimant
    assert calls == []  # nothing was compiled
    check()
