"""What the TorchScript family shares, as hooks around the engine's work: verification runs
without TorchScript's optimizer, freeze as a finalize step, traced parts that cannot run alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchstitch as ts
from torchstitch.core import default_hooks, verification

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


class Child(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.relu(self.lin(x))


class Parent(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = Child()
        self.post = nn.Linear(3, 3)

    def forward(self, x):
        return self.post(self.child(x))


def test_compiled_runs_are_verified_without_torchscripts_optimizer(monkeypatch):
    """Verification runs the compiled graph as compiled: no profiling run on tracing inputs
    (the caller's first calls profile real shapes), and the switch does not leak."""
    seen = []

    def spy(real):
        def run(fn, args):
            scripted = isinstance(fn, (torch.jit.ScriptModule, torch.ScriptMethod))
            seen.append((scripted, torch._C._get_graph_executor_optimize()))
            return real(fn, args)

        return run

    # verification runs eager modules itself, compiled ones through torchstitch_verification_run
    monkeypatch.setattr(verification, "call_for_values", spy(verification.call_for_values))
    monkeypatch.setattr(default_hooks, "call_for_values", spy(default_hooks.call_for_values))
    model = Parent()
    x = torch.randn(4, 3)
    rules = [ts.Rule("script", path=""), ts.Rule("trace", path="child")]
    result = ts.Engine(rules=rules).compile(model, example_inputs=(x,))
    compiled_runs = [optimize for scripted, optimize in seen if scripted]
    eager_runs = [optimize for scripted, optimize in seen if not scripted]
    assert len(compiled_runs) == 2, seen  # the traced child on its inputs, the root on example_inputs
    assert compiled_runs == [False, False] and all(eager_runs)
    assert torch._C._get_graph_executor_optimize()
    torch.testing.assert_close(result.module(x), model(x))


def test_blocking_the_family_plugin_runs_verification_optimized(monkeypatch):
    # the unoptimized switch is the TorchScript plugin's wrapper, not the engine's
    seen = []
    real = default_hooks.call_for_values

    def spy(fn, args):
        seen.append(torch._C._get_graph_executor_optimize())
        return real(fn, args)

    monkeypatch.setattr(default_hooks, "call_for_values", spy)
    model = Parent()
    x = torch.randn(4, 3)
    compiled = ts.trace(model, (x,), plugins=["no:torchscript"])
    torch.testing.assert_close(compiled(x), model(x))
    assert seen and all(seen)


def test_freeze_is_the_family_finalize_step():
    model = Parent().eval()
    x = torch.randn(4, 3)
    frozen = ts.script(model, freeze=True)
    torch.testing.assert_close(frozen(x), model(x))
    assert not list(frozen.parameters())  # folded into the graph: torch.jit.freeze ran
    # without the family plugin nothing freezes: the root keeps its parameters
    kept = ts.script(model, freeze=True, plugins=["no:torchscript"])
    assert list(kept.parameters())


def test_freeze_of_a_training_model_is_refused_at_plan_time(watch):
    model = Parent()
    check = watch(model)
    with pytest.raises(ts.PlanError) as info:
        ts.plan(model, root_strategy="script", freeze=True)
    assert "eval mode" in str(info.value) and info.value.path == ""
    check()


def test_a_traced_submodule_does_not_run_alone():
    model = Parent()
    x = torch.randn(4, 3)
    traced = ts.trace(model, (x,))
    # the child is part of the root's trace: nothing to compare on its own
    assert ts.locate(model, traced, (x,)) == []

    # a plugin saying every module runs alone makes locate try the child
    class RunsAlone:
        name = "runs-alone"

        @ts.hookimpl(tryfirst=True)
        def torchstitch_runs_alone(self):
            return True

    found = ts.locate(model, traced, (x,), plugins=[RunsAlone()])
    # torch refuses to call the parts of a trace: every one of them "raises"
    assert [d.path for d in found] == ["child.lin", "post"]
    assert all("raised" in d.detail for d in found)
