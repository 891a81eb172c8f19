"""The built-in ``unsupported`` strategy: the module stays in Python, and no compiled region may hold it.

Where it may sit in a plan (regions, shared modules) is the planner's business,
tested in tests/core/test_planner.py and test_properties.py; here: what the
strategy itself does, and that it is an ordinary, blockable built-in plugin.
"""

import pytest
import torch
from torch import nn

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


# no `from __future__ import annotations`: TorchScript reads these classes


@ts.compile_mode("script")
class Scripted(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x))


class Numpy(nn.Module):
    """Leaves torch for NumPy: nothing can compile it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.from_numpy(self.lin(x).detach().numpy() * 2.0)


@ts.compile_mode("unsupported")
class Unsupported(Numpy):
    pass


class Pair(nn.Module):
    def __init__(self, first, second):
        super().__init__()
        self.first = first
        self.second = second

    def forward(self, x):
        return self.second(self.first(x))


CLAIMS = {
    "decorator": (lambda: Pair(Scripted(), Unsupported()), ()),
    "rule": (lambda: Pair(Scripted(), Numpy()), (ts.Rule("unsupported", path="second"),)),
}


@pytest.mark.parametrize("claimed_by", list(CLAIMS))
def test_the_module_stays_in_python_in_a_shell_sharing_its_weights(claimed_by, watch):
    factory, rules = CLAIMS[claimed_by]
    model = factory()
    check = watch(model)
    x = torch.randn(4, 3)
    result = ts.Engine(rules=rules).compile(model, example_inputs=(x,))
    check()
    kept = result.module.second
    assert type(kept) is type(model.second) and kept is not model.second
    assert kept.lin.weight is model.second.lin.weight
    assert isinstance(result.module.first, torch.jit.ScriptModule)
    node = result.plan["second"]
    assert node.strategy == "unsupported"
    # one successful attempt that compiled nothing, so there was nothing to verify
    (attempt,) = node.outcome.attempts
    assert (attempt.strategy, attempt.error_type) == ("unsupported", None)
    assert node.outcome.n_verified == 0
    torch.testing.assert_close(result.module(x), model(x))


def test_inside_a_compiled_region_it_is_an_error_that_fallback_does_not_hide(watch):
    model = Pair(Scripted(), Unsupported())
    check = watch(model)
    with pytest.raises(ts.UnsupportedModuleError) as info:
        ts.compile(
            model,
            rules=[ts.Rule("script", path="")],
            example_inputs=(torch.randn(4, 3),),
            on_error="fallback",
        )
    err = info.value
    assert (err.path, err.strategy) == ("second", "unsupported")
    assert err.claimant == f"@compile_mode on {Unsupported.__module__}.{Unsupported.__qualname__}"
    text = str(err)
    assert "[at 'second', strategy 'unsupported', claimed by @compile_mode on " in text
    assert "'script' region rooted at <root>" in text
    assert isinstance(err, NotImplementedError)  # what e3nn.util.jit raises for the same case
    check()


def test_blocking_the_plugin_makes_unsupported_claims_unknown(watch):
    model = Pair(Scripted(), Unsupported())
    check = watch(model)
    with pytest.raises(ts.UnknownStrategyError) as info:
        ts.plan(model, plugins=["no:unsupported"])
    err = info.value
    assert (err.path, err.strategy) == ("second", "unsupported")
    known = str(err).split("known strategies: ", 1)[1]
    assert "'script'" in known and "'unsupported'" not in known
    check()
    assert ts.plan(model, plugins=[])["second"].strategy == "unsupported"  # registered by default
