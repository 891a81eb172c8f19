"""The built-in tracing-input providers: the caller's ``inputs=``, ``_make_tracing_inputs``, recorded.

Their order (the caller's beat the module's, which beat the recorded ones), what
each gives, a third-party provider's place after them, and the TracingInputsError
that lists every provider asked.  The forms of ``inputs=`` and the recording
itself: tests/core/test_inputs.py.
"""

import pytest
import torch
from modules import Parent, Probe, outcome
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]

#: the built-in providers' plugin names, in the order they are asked
PROVIDERS = ("inputs.caller", "inputs.method", "inputs.recorded")


# no `from __future__ import annotations`: TorchScript reads these classes


class ProbeWithMethod(Probe):
    """Gives two distinct tracing inputs of its own."""

    def _make_tracing_inputs(self, n):
        return [{"forward": (torch.randn(2, 3),)}, {"forward": (torch.randn(5, 3),)}]


class NeverCalls(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(3, 3)
        self.unused = Probe()

    def forward(self, x):
        return self.used(x)


# --------------------------------------------------------------------------
# provider order
# --------------------------------------------------------------------------


def test_caller_inputs_beat_make_tracing_inputs_and_recording():
    model = Parent(ProbeWithMethod())
    x = torch.randn(4, 3)
    given = [(torch.randn(6, 3),), (torch.randn(1, 3),), (torch.randn(2, 3),)]
    result = ts.Engine().compile(model, example_inputs=(x,), inputs={"child": given})
    out = outcome(result, "child")
    assert out.inputs_source == "inputs.caller"
    assert out.n_verified == 3  # the caller's three inputs, not the method's two
    torch.testing.assert_close(result.module(x), model(x))


def test_make_tracing_inputs_beats_recording():
    model = Parent(ProbeWithMethod())
    x = torch.randn(4, 3)
    result = ts.Engine().compile(model, example_inputs=(x,))
    out = outcome(result, "child")
    assert out.inputs_source == "inputs.method"
    assert out.n_verified == 2  # the method's two inputs, not the one recorded
    torch.testing.assert_close(result.module(x), model(x))


def test_make_tracing_inputs_needs_no_example_inputs():
    model = Parent(ProbeWithMethod())
    result = ts.Engine().compile(model)
    assert outcome(result, "child").inputs_source == "inputs.method"
    x = torch.randn(4, 3)
    torch.testing.assert_close(result.module(x), model(x))


def test_make_tracing_inputs_receives_n_trace_checks():
    seen = []

    class Asks(Probe):
        def _make_tracing_inputs(self, n):
            seen.append(n)
            return [{"forward": (torch.randn(2, 3),)} for _ in range(n)]

    model = Parent(Asks())
    result = ts.Engine(n_trace_checks=3).compile(model)
    assert seen == [3]
    assert outcome(result, "child").n_verified == 3


def test_recorded_inputs_when_nothing_else():
    model = Parent(Probe())
    x = torch.randn(4, 3)
    result = ts.Engine().compile(model, example_inputs=(x,))
    out = outcome(result, "child")
    assert out.inputs_source == "inputs.recorded"
    assert out.n_verified == 1
    assert isinstance(result.module.child, torch.jit.ScriptModule)
    torch.testing.assert_close(result.module(x), model(x))
    y = torch.randn(2, 3)
    torch.testing.assert_close(result.module(y), model(y))


# --------------------------------------------------------------------------
# missing inputs
# --------------------------------------------------------------------------


def test_no_provider_names_path_and_every_provider(watch):
    model = Parent(Probe())
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        ts.compile(model)
    err = info.value
    text = str(err)
    assert err.path == "child"
    assert "'child'" in text
    assert err.strategy == "trace"
    positions = [text.index(p) for p in PROVIDERS]
    assert positions == sorted(positions), "providers not listed in the order asked"
    assert "example_inputs" in text
    assert "inputs=" in text
    assert "_make_tracing_inputs" in text
    check()


def test_trace_node_never_reached_by_recording(watch):
    model = NeverCalls()
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),))
    err = info.value
    assert err.path == "unused"
    assert "'unused'" in str(err)
    assert "never called" in str(err)
    for provider in PROVIDERS:
        assert provider in str(err)
    check()


# --------------------------------------------------------------------------
# malformed _make_tracing_inputs
# --------------------------------------------------------------------------


def _bad_method_outputs():
    x = torch.randn(2, 3)
    return [
        pytest.param(lambda: ({"forward": (x,)},), "tuple", id="tuple-not-list"),
        pytest.param(lambda: {"forward": (x,)}, "dict", id="dict-not-list"),
        pytest.param(lambda: [], "empty", id="empty-list"),
        pytest.param(lambda: [{"forward": x}], "Tensor", id="tensor-not-tuple"),
        pytest.param(lambda: [{"forward": [x]}], "list", id="list-not-tuple"),
        pytest.param(lambda: [(x,)], "tuple", id="item-not-dict"),
        pytest.param(lambda: [{"nope": (x,)}], "nope", id="unknown-method"),
    ]


@pytest.mark.parametrize(("make", "mentions"), _bad_method_outputs())
def test_malformed_make_tracing_inputs(watch, make, mentions):
    class Malformed(Probe):
        def _make_tracing_inputs(self, n):
            return make()

    model = Parent(Malformed())
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),))
    err = info.value
    assert err.path == "child"
    assert "'child'" in str(err)
    assert "inputs.method" in str(err)
    assert mentions in str(err)
    check()


# --------------------------------------------------------------------------
# what the module's own _make_tracing_inputs gives
# --------------------------------------------------------------------------


@ts.compile_mode("trace")
class Gather(nn.Module):
    """Floating features and an integer index: the index must keep its dtype."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x, index):
        return self.lin(x)[index]

    def _make_tracing_inputs(self, n):
        return [{"forward": (torch.randn(4, 3), torch.tensor([2, 0]))}]


def test_make_tracing_inputs_are_cast_to_the_modules_floating_dtype():
    model = Gather().double()
    result = ts.Engine().compile(model)
    assert outcome(result, "").inputs_source == "inputs.method"
    x, index = torch.randn(5, 3, dtype=torch.float64), torch.tensor([4, 1, 1])
    out = result.module(x, index)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, model(x, index))


def test_make_tracing_inputs_set_on_the_instance():
    child = Probe()
    child._make_tracing_inputs = lambda n: [{"forward": (torch.randn(2, 3),)}]
    model = Parent(child)
    result = ts.Engine().compile(model)
    assert outcome(result, "child").inputs_source == "inputs.method"
    x = torch.randn(4, 3)
    torch.testing.assert_close(result.module(x), model(x))


# --------------------------------------------------------------------------
# providers are plugins: blockable, and a third party's come after the built-ins
# --------------------------------------------------------------------------


class Provider:
    """A third-party provider: one input for every node, and the nodes it was asked for."""

    name = "inputs.third-party"

    def __init__(self):
        self.asked = []

    @ts.hookimpl
    def torchstitch_tracing_inputs(self, node):
        self.asked.append(node.path)
        return [{"forward": (torch.randn(6, 3),)}]


class Silent:
    """A provider that never has inputs."""

    name = "silent"

    @ts.hookimpl
    def torchstitch_tracing_inputs(self):
        return None


def test_a_blocked_provider_is_not_asked_and_the_next_one_answers():
    model = Parent(ProbeWithMethod())
    x = torch.randn(4, 3)
    result = ts.Engine(plugins=["no:inputs.method"]).compile(model, example_inputs=(x,))
    out = outcome(result, "child")
    assert out.inputs_source == "inputs.recorded"
    assert out.n_verified == 1  # the one recorded call, not the method's two
    torch.testing.assert_close(result.module(x), model(x))


def test_a_third_party_provider_is_asked_only_when_the_built_ins_have_nothing():
    provider = Provider()
    model = Parent(Probe())
    x = torch.randn(4, 3)
    result = ts.Engine(plugins=[provider]).compile(model, example_inputs=(x,))
    assert outcome(result, "child").inputs_source == "inputs.recorded"
    assert provider.asked == []

    result = ts.Engine(plugins=[provider]).compile(model)
    assert outcome(result, "child").inputs_source == "inputs.third-party"
    assert provider.asked == ["child"]
    torch.testing.assert_close(result.module(x), model(x))


def test_the_error_lists_exactly_the_providers_asked_in_order(watch):
    model = Parent(Probe())
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        ts.compile(model, plugins=["no:inputs.method", Silent()])
    text = str(info.value)
    assert info.value.path == "child"
    asked = text.split("asked, in order: ", 1)[1].split(";", 1)[0]
    assert asked == "inputs.caller, inputs.recorded, silent"
    check()
