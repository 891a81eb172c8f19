"""The caller's state: what the compiled model shares with the caller's (tensors, nothing
else), and every run torchstitch makes starting from the caller's buffers and leaving them.

Each test checks the compiled model against eager and the caller's module objects,
tensors and flags after a successful compile and after a failed one.
"""

import pytest
import torch
from modules import ScriptedLeaf, Stack
from torch import nn

import torchstitch as ts
from torchstitch.core.state import CallerState

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore::torchstitch.TorchstitchWarning"),
]


# --------------------------------------------------------------------------
# tiny modules (no `from __future__ import annotations`: TorchScript reads these)
# --------------------------------------------------------------------------


@ts.compile_mode("script")
class BrokenScript(nn.Module):
    def forward(self, x):
        f = lambda t: t * 2.0  # noqa: E731  (lambdas are not scriptable: the compile fails)
        return f(x)


class Ema(nn.Module):
    """A running average rebound in forward (``self.ema = ...``), as most EMA code does."""

    def __init__(self):
        super().__init__()
        self.register_buffer("ema", torch.zeros(4))

    def forward(self, x):
        self.ema = 0.9 * self.ema + 0.1 * x.mean(0)
        return x + self.ema


class Counter(nn.Module):
    """A step counter updated in place; the output depends on it."""

    def __init__(self):
        super().__init__()
        self.register_buffer("steps", torch.zeros(()))

    def forward(self, x):
        self.steps.add_(1)
        return x * self.steps


class Doubler(nn.Module):
    """Changes its input in place."""

    def forward(self, x):
        x.mul_(2)
        return x + 1


def x4():
    return torch.randn(3, 4)


def claimed(module, mode):
    ts.set_compile_mode(module, mode)
    return module


def _buffers(model):
    """Every buffer of every module: (path, name, tensor object, a copy of its values)."""
    return [
        (path, name, tensor, tensor.clone())
        for path, module in model.named_modules()
        for name, tensor in module._buffers.items()
    ]


def assert_same_buffers(model, before):
    after = _buffers(model)
    assert [a[:2] for a in after] == [b[:2] for b in before], "buffers were added or dropped"
    for (path, name, tensor, _), (_, _, old, value) in zip(after, before):
        assert tensor is old, f"{path}.{name} was rebound"
        assert torch.equal(tensor, value), f"{path}.{name} changed its values"


# --------------------------------------------------------------------------
# 1. the compiled model shares tensors with the caller's, nothing else
# --------------------------------------------------------------------------


def test_eval_on_the_compiled_model_leaves_the_callers_modes(watch):
    model = Stack(ScriptedLeaf(), nn.Dropout(0.0), nn.BatchNorm1d(4))
    check = watch(model)
    x = x4()
    compiled = ts.compile(model, example_inputs=(x,))
    compiled.eval()
    assert [m.training for m in model.modules()] == [True] * len(list(model.modules()))
    assert not compiled.layers[1].training and not compiled.layers[2].training
    model.eval()
    torch.testing.assert_close(compiled(x), model(x))
    # the tensors are shared: one copy of the weights and statistics
    assert compiled.layers[2].running_mean is model.layers[2].running_mean
    check()


def test_hooks_registered_on_the_compiled_model_stay_off_the_callers():
    model = Stack(ScriptedLeaf(), nn.ReLU())
    seen = []
    model.layers[1].register_forward_hook(lambda m, i, o: seen.append("caller's"))
    compiled = ts.compile(model)
    compiled.layers[1].register_forward_hook(lambda m, i, o: seen.append("compiled's"))
    compiled(x4())
    assert seen == ["caller's", "compiled's"]  # the caller's hook still runs in the compiled model
    seen.clear()
    model(x4())
    assert seen == ["caller's"]


def test_a_callers_script_module_is_shared_as_is():
    """TorchScript modules cannot be shelled: the compiled model holds the caller's object."""
    inner = torch.jit.script(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))
    model = Stack(ScriptedLeaf(), inner)
    compiled = ts.compile(model)
    assert compiled.layers[1] is inner
    compiled.eval()
    assert not inner.training  # as the README says


def test_in_place_swaps_compiled_children_into_the_callers_modules():
    model = Stack(ScriptedLeaf(), nn.ReLU())
    relu = model.layers[1]
    compiled = ts.compile(model, in_place=True)
    assert compiled is model
    assert isinstance(model.layers[0], torch.jit.ScriptModule)
    assert model.layers[1] is relu  # not compiled: the caller's module stays


def test_a_failed_compile_leaves_modes_and_modules(watch):
    model = Stack(nn.Dropout(0.0), BrokenScript())
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(x4(),))
    assert info.value.path == "layers.1"
    assert all(m.training for m in model.modules())
    check()


# --------------------------------------------------------------------------
# 2. a buffer rebound in forward
# --------------------------------------------------------------------------


def test_a_rebound_buffer_is_the_callers_tensor_after_compiling(watch):
    model = Stack(Ema(), ScriptedLeaf())
    ema = model.layers[0].ema
    before = _buffers(model)
    check = watch(model)
    x = x4()
    compiled = ts.compile(model, example_inputs=(x,))
    assert model.layers[0].ema is ema and not ema.any()
    assert compiled.layers[0].ema is ema  # the compiled model starts from the caller's state
    assert_same_buffers(model, before)
    check()
    torch.testing.assert_close(compiled(x), model(x))


def test_a_rebound_buffer_is_restored_after_a_failed_compile(watch):
    model = Stack(Ema(), BrokenScript())
    before = _buffers(model)
    check = watch(model)
    with pytest.raises(ts.NodeCompileError):
        ts.compile(model, example_inputs=(x4(),))
    assert_same_buffers(model, before)
    check()


def test_a_scripted_rebinding_forward_keeps_sharing_the_callers_buffer():
    """A scripted forward rebinds the buffer in the compiled module: the root's verification
    run must not leave the compiled model on a tensor of its own."""
    model = Stack(claimed(Ema(), "script"), nn.ReLU())
    ema = model.layers[0].ema
    x = x4()
    compiled = ts.compile(model, example_inputs=(x,))
    assert compiled.layers[0].ema is ema and not ema.any()
    torch.testing.assert_close(compiled(x), model(x))


def test_buffers_added_in_forward_are_dropped():
    class Registers(nn.Module):
        def forward(self, x):
            self.register_buffer("last", x.detach().clone())
            return x

    model = Stack(Registers(), ScriptedLeaf())
    ts.compile(model, example_inputs=(x4(),))
    assert "last" not in model.layers[0]._buffers


def test_caller_state_restores_bindings_and_values_of_a_subtree():
    model = Stack(Ema(), Counter())
    state = CallerState(model)
    before = _buffers(model)
    model(x4())
    model.layers[0].register_buffer("extra", torch.ones(1))
    assert state.changed() == {id(model.layers[0]), id(model.layers[1])}
    state.restore(model.layers[1])
    assert state.changed() == {id(model.layers[0])}
    state.restore()
    assert state.changed() == set()
    assert_same_buffers(model, before)


# --------------------------------------------------------------------------
# 3. uninitialised lazy modules
# --------------------------------------------------------------------------


def test_an_uninitialized_lazy_module_is_refused_and_stays_lazy():
    model = Stack(nn.LazyLinear(4), ScriptedLeaf())
    with pytest.raises(ts.PlanError) as info:
        ts.compile(model, example_inputs=(torch.randn(3, 5),))
    assert info.value.path == "layers.0"
    assert "'layers.0'" in str(info.value) and "run the model once first" in str(info.value)
    assert type(model.layers[0]) is nn.LazyLinear
    assert model.layers[0].has_uninitialized_params()


def test_a_lazy_module_inside_a_compiled_region_is_refused():
    model = Stack(claimed(Stack(nn.LazyLinear(4)), "script"))
    with pytest.raises(ts.PlanError) as info:
        ts.compile(model)
    assert (info.value.path, info.value.strategy) == ("layers.0.layers.0", "script")
    assert model.layers[0].layers[0].has_uninitialized_params()


def test_a_lazy_module_compiles_once_initialized():
    model = Stack(nn.LazyLinear(4), ScriptedLeaf())
    x = torch.randn(3, 5)
    model(x)
    compiled = ts.compile(model, example_inputs=(x,))
    torch.testing.assert_close(compiled(x), model(x))
    assert compiled.layers[0].weight is model.layers[0].weight


def test_a_lazy_module_left_in_python_without_inputs_is_not_run():
    model = Stack(nn.LazyLinear(4), ScriptedLeaf())
    compiled = ts.compile(model)  # nothing runs it: nothing to refuse
    assert model.layers[0].has_uninitialized_params()
    x = torch.randn(3, 5)
    out = compiled(x)  # created on the compiled model's first call, in the shared parameters
    torch.testing.assert_close(out, model(x))


# --------------------------------------------------------------------------
# 4. a buffer updated in place: every run starts from the caller's state
# --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["trace", "script"])
def test_an_in_place_step_counter_does_not_fail_verification(strategy, watch):
    model = Stack(ScriptedLeaf(), Counter())
    check = watch(model)
    x = x4()
    compiled = ts.compile(model, example_inputs=(x,), rules=[ts.Rule(strategy, path="layers.1")])
    assert isinstance(compiled.layers[1], torch.jit.ScriptModule)
    assert model.layers[1].steps.item() == 0
    check()
    out = compiled(x)
    assert model.layers[1].steps.item() == 1  # one counter, shared
    model.layers[1].steps.zero_()
    torch.testing.assert_close(out, model(x))  # both from step 0


def test_a_counter_called_twice_verifies_against_runs_from_the_callers_state():
    """The recording's second call of the counter saw step 1; verification starts each
    run from step 0, so it compares with a fresh eager run, not with the recording."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.counter = claimed(Counter(), "trace")

        def forward(self, x):
            return self.counter(x) + self.counter(-x)

    model = Twice()
    result = ts.Engine().compile(model, example_inputs=(x4(),))
    assert result.plan["counter"].outcome.n_verified == 2
    assert model.counter.steps.item() == 0


def test_locate_starts_each_run_from_the_callers_state():
    model = Stack(Counter(), nn.ReLU())
    compiled = ts.compile(model, rules=[ts.Rule("trace", path="layers.0")], example_inputs=(x4(),))
    assert ts.locate(model, compiled, (x4(),), paths=["layers.0"]) == []
    assert model.layers[0].steps.item() == 0


# --------------------------------------------------------------------------
# 5. a forward that changes its input in place
# --------------------------------------------------------------------------


def test_tracing_a_forward_that_changes_its_input(watch):
    model = Stack(ScriptedLeaf(), claimed(Doubler(), "trace"))
    check = watch(model)
    x = x4()
    compiled = ts.compile(model, example_inputs=(x,))
    assert isinstance(compiled.layers[1], torch.jit.ScriptModule)
    torch.testing.assert_close(compiled(x.clone()), model(x.clone()))
    check()


def test_trace_leaves_the_callers_example_inputs_alone():
    x = x4()
    kept = x.clone()
    compiled = ts.trace(Doubler(), example_inputs=(x,))
    assert torch.equal(x, kept)
    torch.testing.assert_close(compiled(x.clone()), Doubler()(x.clone()))


# --------------------------------------------------------------------------
# 8. a model on the meta device
# --------------------------------------------------------------------------


def test_verifying_a_meta_model_is_a_verification_error():
    model = Stack(ScriptedLeaf(), nn.BatchNorm1d(4)).to("meta")
    before = [(p, id(m), sorted(m.__dict__)) for p, m in model.named_modules()]
    buffers = [(p, n, t) for p, n, t, _ in _buffers(model)]
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(model, example_inputs=(torch.randn(3, 4, device="meta"),))
    assert info.value.path == ""
    assert "'<root>'" in str(info.value) and "verify=False" in str(info.value)
    # meta tensors have no values to compare: the modules and tensor objects are the caller's
    assert [(p, id(m), sorted(m.__dict__)) for p, m in model.named_modules()] == before
    assert [(p, n, t) for p, n, t, _ in _buffers(model)] == buffers


def test_a_meta_model_compiles_without_verification():
    model = Stack(ScriptedLeaf(), claimed(Doubler(), "trace")).to("meta")
    x = torch.randn(3, 4, device="meta")
    compiled = ts.compile(model, example_inputs=(x,), verify=False)
    assert isinstance(compiled.layers[1], torch.jit.ScriptModule)
    out = compiled(x)
    assert out.is_meta and out.shape == (3, 4)
