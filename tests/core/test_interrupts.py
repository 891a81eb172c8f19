"""KeyboardInterrupt (and other BaseExceptions) during a compile: never wrapped in a
torchstitch error, never swallowed by on_error="fallback", and the caller's model (its
submodules, weights, BatchNorm statistics and hooks) is left exactly as it was."""

import warnings

import pytest
import torch
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore::torchstitch.TorchstitchWarning"),
]


# --------------------------------------------------------------------------
# a model with BatchNorm in training mode (the eager recording run updates its stats)
# --------------------------------------------------------------------------


@ts.compile_mode("trace")
class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return torch.tanh(self.bn(self.lin(x)))


@ts.compile_mode("script")
class Scripted(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.lin(x)
        return -x


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = Normed()
        self.second = Scripted()

    def forward(self, x):
        return self.second(self.first(x))


class Model(nn.Module):
    """first (traced) and mid.first / mid.second compile before ``last``."""

    def __init__(self):
        super().__init__()
        self.first = Normed()
        self.mid = Block()
        self.last = Normed()

    def forward(self, x):
        return self.last(self.mid(self.first(x)))


def x8():
    return torch.randn(8, 4) * 3.0 + 1.0


def bn_state(model):
    return {
        name: {k: v.clone() for k, v in m.state_dict().items()}
        for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm1d)
    }


def assert_bn_restored(model, before):
    after = bn_state(model)
    assert after.keys() == before.keys()
    for name, state in before.items():
        for key, value in state.items():
            assert torch.equal(after[name][key], value), f"{name}.{key} changed"


def assert_left_alone(model, originals):
    assert dict(model.named_modules(remove_duplicate=False)) == originals
    for name, module in model.named_modules():
        where = name or "<root>"
        assert not isinstance(module, torch.jit.ScriptModule), f"{where} was replaced"
        assert "__overloads__" not in module.__dict__, f"__overloads__ added to {where}"
        assert not module._forward_pre_hooks and not module._forward_hooks, f"hooks left on {where}"


# --------------------------------------------------------------------------
# plugins that interrupt
# --------------------------------------------------------------------------


class InterruptWhenCompiled:
    """An observer that interrupts when ``at`` has compiled."""

    name = "interrupt-observer"

    def __init__(self, at, exc=KeyboardInterrupt):
        self.at = at
        self.exc = exc
        self.seen = []

    @ts.hookimpl
    def torchstitch_node_compiled(self, node, original, compiled, seconds):
        self.seen.append(node.path)
        if node.path == self.at:
            raise self.exc()


class InterruptingStrategy:
    name = "interrupting-strategy"

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_interrupted(module, context):
            raise KeyboardInterrupt

        return [
            ts.Strategy(
                name="interrupted",
                family="torchscript",
                compile=compile_interrupted,
                fallbacks=("script",),
            )
        ]


class InterruptingInputs:
    name = "interrupting-inputs"

    @ts.hookimpl(tryfirst=True)
    def torchstitch_tracing_inputs(self, node):
        if node.path == "last":
            raise KeyboardInterrupt
        return None


class InterruptingClaim:
    name = "interrupting-claim"

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        if path == "mid.second":
            raise KeyboardInterrupt
        return None


class InterruptingPrepare:
    name = "interrupting-prepare"

    @ts.hookimpl
    def torchstitch_prepare(self, module, node):
        if node.path == "last":
            raise KeyboardInterrupt
        return None


class InterruptsInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        raise KeyboardInterrupt


# --------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------


CALLS = {
    "observer": dict(plugins=[InterruptWhenCompiled("last")]),
    "observer-deep": dict(plugins=[InterruptWhenCompiled("mid.second")]),
    "strategy": dict(plugins=[InterruptingStrategy()], rules=[ts.Rule("interrupted", path="last")]),
    "strategy-under-fallback": dict(
        plugins=[InterruptingStrategy()], rules=[ts.Rule("interrupted", path="last")], on_error="fallback"
    ),
    "inputs-provider": dict(plugins=[InterruptingInputs()]),
    "claim-hook": dict(plugins=[InterruptingClaim()]),
    "prepare-hook": dict(plugins=[InterruptingPrepare()]),
}


@pytest.mark.parametrize("in_place", [False, True], ids=["copy", "in_place"])
@pytest.mark.parametrize("where", list(CALLS))
def test_keyboard_interrupt_propagates_and_leaves_the_model_alone(where, in_place, watch):
    model = Model().train()
    originals = dict(model.named_modules(remove_duplicate=False))
    bn_before = bn_state(model)
    check = watch(model)
    showwarning = warnings.showwarning
    with pytest.raises(KeyboardInterrupt) as info:
        ts.compile(model, example_inputs=(x8(),), in_place=in_place, **CALLS[where])
    assert type(info.value) is KeyboardInterrupt  # not wrapped, not a StitchError
    check()
    assert_left_alone(model, originals)
    assert_bn_restored(model, bn_before)
    assert warnings.showwarning is showwarning  # the deprecation reporter uninstalled itself


def test_observer_interrupt_comes_after_earlier_nodes_compiled(watch):
    """The interrupt really happens late: nodes compiled before it are discarded."""
    model = Model().train()
    observer = InterruptWhenCompiled("last")
    check = watch(model)
    with pytest.raises(KeyboardInterrupt):
        ts.compile(model, example_inputs=(x8(),), plugins=[observer], in_place=True)
    assert observer.seen == ["first", "mid.first", "mid.second", "last"]
    check()


@pytest.mark.parametrize("in_place", [False, True], ids=["copy", "in_place"])
def test_keyboard_interrupt_in_a_forward_during_recording(in_place, watch):
    model = Model().train()
    model.mid.second = InterruptsInForward()
    originals = dict(model.named_modules(remove_duplicate=False))
    bn_before = bn_state(model)
    check = watch(model)
    with pytest.raises(KeyboardInterrupt) as info:
        ts.compile(model, example_inputs=(x8(),), in_place=in_place)
    assert type(info.value) is KeyboardInterrupt  # not a TracingInputsError
    check()
    assert_left_alone(model, originals)  # the recording hooks were removed
    assert_bn_restored(model, bn_before)  # first and mid.first ran in training mode


def test_keyboard_interrupt_from_make_tracing_inputs(watch):
    class Interrupts(Normed):
        def _make_tracing_inputs(self, n):
            raise KeyboardInterrupt

    model = Model().train()
    model.last = Interrupts()
    originals = dict(model.named_modules(remove_duplicate=False))
    bn_before = bn_state(model)
    check = watch(model)
    with pytest.raises(KeyboardInterrupt) as info:
        ts.compile(model, example_inputs=(x8(),), in_place=True)
    assert type(info.value) is KeyboardInterrupt  # not a PluginError
    check()
    assert_left_alone(model, originals)
    assert_bn_restored(model, bn_before)


def test_system_exit_from_an_observer_is_not_wrapped(watch):
    model = Model().train()
    check = watch(model)
    with pytest.raises(SystemExit):
        ts.compile(model, example_inputs=(x8(),), plugins=[InterruptWhenCompiled("mid.first", SystemExit)])
    check()


def test_compile_works_after_an_interrupt():
    model = Model().train()
    with pytest.raises(KeyboardInterrupt):
        ts.compile(model, example_inputs=(x8(),), plugins=[InterruptWhenCompiled("last")])
    model.eval()
    x = x8()
    compiled = ts.compile(model, example_inputs=(x,))
    assert isinstance(compiled.last, torch.jit.ScriptModule)
    torch.testing.assert_close(compiled(x), model(x))


def test_interrupt_survives_deprecation_warnings_as_errors(watch):
    model = Model().train()
    check = watch(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ts.TorchScriptDeprecationWarning)
        with pytest.raises(KeyboardInterrupt):
            ts.compile(model, example_inputs=(x8(),), plugins=[InterruptWhenCompiled("last")])
    check()


def test_compile_error_survives_deprecation_warnings_as_errors(watch):
    @ts.compile_mode("script")
    class Unscriptable(nn.Module):
        def forward(self, x):
            f = lambda t: t * 2.0  # noqa: E731
            return f(x)

    model = Model().eval()
    model.last = Unscriptable()
    check = watch(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ts.TorchScriptDeprecationWarning)
        with pytest.raises(ts.NodeCompileError) as info:
            ts.compile(model, example_inputs=(x8(),))
    assert info.value.path == "last"
    check()
