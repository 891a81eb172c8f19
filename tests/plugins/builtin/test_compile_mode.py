"""The built-in ``compile_mode`` plugin: ``@compile_mode`` and ``set_compile_mode`` become claims.

What the decorator stores and how ``get_compile_mode`` reads it through the MRO
is tested with core/claims.py (tests/core/test_claims.py); here: the claims the
plugin offers for every module of a tree, that it reads without the module's
``__getattr__``, and that it is an ordinary, blockable built-in plugin.
"""

import pytest
import torch
from torch import nn

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


# no `from __future__ import annotations`: TorchScript reads these classes


@ts.compile_mode("trace")
class Traced(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x))


@ts.compile_mode("script")
class Scripted(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if bool(x.sum() > 0):
            return self.inner(x)
        return -self.inner(x)


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.traced = Traced()
        self.scripted = Scripted(nn.Linear(3, 3))
        self.marked = nn.Linear(3, 3)
        ts.set_compile_mode(self.marked, "script")

    def forward(self, x):
        return self.marked(self.scripted(self.traced(x)))


def _name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def test_every_decorated_or_marked_module_is_offered_one_decorator_claim(watch):
    model = Plain()
    check = watch(model)
    plan = ts.plan(model)
    expected = {
        "traced": ("trace", f"@compile_mode on {_name(Traced)}"),
        "scripted": ("script", f"@compile_mode on {_name(Scripted)}"),
        "marked": ("script", "set_compile_mode on the instance"),
    }
    for path, (strategy, claimant) in expected.items():
        (offer,) = plan[path].offers
        assert (offer.strategy, offer.kind, offer.claimant) == (strategy, ts.ClaimKind.DECORATOR, claimant)
        assert plan[path].claim == offer
    for path in ("", "traced.lin", "scripted.inner"):
        assert plan[path].offers == ()
    check()
    x = torch.randn(4, 3)
    compiled = ts.compile(model, example_inputs=(x,))
    assert isinstance(compiled.traced, torch.jit.ScriptModule)
    assert isinstance(compiled.scripted, torch.jit.ScriptModule)
    assert isinstance(compiled.marked, torch.jit.ScriptModule)
    for sample in (x, -x.abs() - 1.0):
        torch.testing.assert_close(compiled(sample), model(sample))


def test_the_claim_is_read_without_the_modules_getattr():
    """nn.Module.__getattr__ is slow and runs for every miss: an undecorated module's missing
    mode must be found missing on its type (the claim hook runs once per module)."""
    asked = []

    class Watched(nn.Linear):
        def __getattr__(self, name):
            asked.append(name)
            return super().__getattr__(name)

    model = nn.Sequential(Watched(2, 2), Watched(2, 2))
    ts.set_compile_mode(model[1], "script")
    plan = ts.plan(model)
    assert plan["0"].claim is None and plan["1"].strategy == "script"
    # the planner may read parameters (served by __getattr__), nothing else
    assert set(asked) <= {"weight", "bias"}
    assert not hasattr(model[0], "no_such_attribute")
    assert asked[-1] == "no_such_attribute"  # the spy sees misses


def test_blocking_the_plugin_ignores_decorators_and_marks():
    model = Plain()
    plan = ts.plan(model, plugins=["no:compile_mode"])
    for path in ("traced", "scripted", "marked"):
        assert plan[path].claim is None and plan[path].offers == ()
    assert ts.plan(model)["traced"].strategy == "trace"
