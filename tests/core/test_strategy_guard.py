"""A plugin converting the shell it is given (``.to(torch.bfloat16)``, ``.half()``) would
convert the caller's model, whose parameters the shell shares: the engine puts every
tensor back and raises a PluginError naming the strategy, the node and the tensor.
A strategy converting a copy instead is tested in test_api.py (tolerances)."""

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
        self.register_buffer("offset", torch.full((3,), 0.5))

    def forward(self, x):
        return self.lin(x) + self.offset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(3, 3)
        self.block = Block()

    def forward(self, x):
        return self.block(torch.tanh(self.pre(x)))


def x3():
    return torch.randn(4, 3)


class StrategyPlugin:
    """Registers one strategy ``name`` compiling with ``fn``."""

    def __init__(self, strategy, fn, **kw):
        self.name = f"plugin-{strategy}"
        self.strategy = ts.Strategy(name=strategy, family=kw.pop("family", "python"), compile=fn, **kw)

    @ts.hookimpl
    def torchstitch_strategies(self):
        return [self.strategy]


class ConvertingPrepare:
    """A torchstitch_prepare hook that converts the shell of ``block``."""

    name = "converting-prepare"

    @ts.hookimpl
    def torchstitch_prepare(self, module, node):
        return module.half() if node.path == "block" else None


class ConvertingThenRaisingPrepare:
    name = "raising-prepare"

    @ts.hookimpl
    def torchstitch_prepare(self, module, node):
        module.to(torch.float64)
        raise ValueError("cannot prepare")


def tensors_of(model):
    """name -> (tensor object, dtype, data_ptr, value copy) of every parameter and buffer."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {name: (t, t.dtype, t.data_ptr(), t.detach().clone()) for name, t in named}


def assert_tensors_unchanged(model, before):
    after = dict(list(model.named_parameters()) + list(model.named_buffers()))
    assert after.keys() == before.keys()
    for name, (tensor, dtype, ptr, value) in before.items():
        assert after[name] is tensor, f"{name} was rebound"
        assert tensor.dtype == dtype, f"{name} is {tensor.dtype}"
        assert tensor.data_ptr() == ptr, f"{name} has another storage"
        assert torch.equal(tensor, value), f"{name} changed values"


BLOCK_CONVERTS = [ts.Rule("converts", path="block")]


def to_bf16(module, context):
    return module.to(torch.bfloat16)


def half_then_raise(module, context):
    module.half()
    raise RuntimeError("gave up after converting")


def new_storage(module, context):
    module.lin.weight.data = module.lin.weight.data.clone()
    return module


@pytest.mark.parametrize(
    ("fn", "tensor", "what"),
    [
        (to_bf16, "block.lin.weight", "dtype torch.float32 -> torch.bfloat16"),
        (half_then_raise, "block.lin.weight", "dtype torch.float32 -> torch.float16"),
        (new_storage, "block.lin.weight", "storage replaced"),
    ],
    ids=["to-bf16", "half-then-raise", "new-storage"],
)
@pytest.mark.parametrize("on_error", ["raise", "fallback"])
def test_strategy_changing_the_callers_tensors_is_put_back_and_blamed(watch, fn, tensor, what, on_error):
    model = Net()
    x = x3()
    expected = model(x)
    before = tensors_of(model)
    check = watch(model)
    with pytest.raises(ts.PluginError) as info:
        ts.compile(
            model,
            example_inputs=(x,),
            rules=BLOCK_CONVERTS,
            plugins=[StrategyPlugin("converts", fn)],
            on_error=on_error,
        )
    err = info.value
    assert (err.plugin, err.hook, err.path, err.strategy) == (
        "plugin-converts",
        "Strategy.compile",
        "block",
        "converts",
    )
    assert f"{tensor} ({what})" in str(err)
    assert "'block'" in str(err) and "docs/plugins.md" in str(err)
    assert_tensors_unchanged(model, before)
    check()
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_the_error_of_a_strategy_that_raised_after_converting_is_chained():
    model = Net()
    before = tensors_of(model)
    with pytest.raises(ts.PluginError) as info:
        ts.compile(
            model, rules=[ts.Rule("converts", path="")], plugins=[StrategyPlugin("converts", half_then_raise)]
        )
    assert isinstance(info.value.__cause__, ts.NodeCompileError)
    assert "gave up after converting" in str(info.value.__cause__)
    assert "<root>" in str(info.value) and "pre.weight" in str(info.value)
    assert_tensors_unchanged(model, before)


def test_prepare_hook_converting_the_shell_is_blamed_by_plugin_name(watch):
    model = Net()
    before = tensors_of(model)
    check = watch(model)
    with pytest.raises(ts.PluginError) as info:
        ts.compile(model, rules=[ts.Rule("script", path="block")], plugins=[ConvertingPrepare()])
    err = info.value
    assert (err.plugin, err.hook, err.path) == ("converting-prepare", "torchstitch_prepare", "block")
    assert "block.lin.bias (dtype torch.float32 -> torch.float16)" in str(err)
    assert_tensors_unchanged(model, before)
    check()


def test_prepare_hook_that_raised_after_converting_is_blamed_with_its_error_chained():
    model = Net()
    before = tensors_of(model)
    with pytest.raises(ts.PluginError) as info:
        ts.compile(model, rules=[ts.Rule("script", path="")], plugins=[ConvertingThenRaisingPrepare()])
    err = info.value
    assert (err.plugin, err.hook, err.path) == ("raising-prepare", "torchstitch_prepare", "")
    assert "pre.weight (dtype torch.float32 -> torch.float64)" in str(err)
    assert isinstance(err.__cause__, ts.PluginError) and "cannot prepare" in str(err.__cause__)
    assert_tensors_unchanged(model, before)


def test_an_interrupt_after_converting_puts_the_tensors_back_and_stays_an_interrupt():
    def half_then_interrupt(module, context):
        module.half()
        raise KeyboardInterrupt

    model = Net()
    before = tensors_of(model)
    with pytest.raises(KeyboardInterrupt):
        ts.compile(model, rules=BLOCK_CONVERTS, plugins=[StrategyPlugin("converts", half_then_interrupt)])
    assert_tensors_unchanged(model, before)


def test_gradients_converted_with_their_parameters_are_put_back():
    model = Net()
    model(x3()).sum().backward()
    grad = model.block.lin.weight.grad
    grad_before = grad.clone()
    with pytest.raises(ts.PluginError, match=r"block\.lin\.weight"):
        ts.compile(model, rules=BLOCK_CONVERTS, plugins=[StrategyPlugin("converts", to_bf16)])
    assert model.block.lin.weight.grad is grad
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad, grad_before, rtol=0, atol=0)


def test_parameters_swapped_by_conversion_are_put_back():
    # torch's opt-in swap_tensors conversion changes the Parameter object itself
    model = Net()
    before = tensors_of(model)
    previous = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        with pytest.raises(ts.PluginError, match=r"block\.lin\.weight \(dtype"):
            ts.compile(model, rules=BLOCK_CONVERTS, plugins=[StrategyPlugin("converts", to_bf16)])
    finally:
        torch.__future__.set_swap_module_params_on_conversion(previous)
    assert_tensors_unchanged(model, before)


def test_buffers_converted_on_the_shell_only_leave_the_caller_alone():
    # nn.Module._apply rebinds buffers in the shell's own dict: the caller keeps its own
    def double_buffers(module, context):
        module._buffers["offset"] = module.offset.double()
        return module

    model = Net()
    x = x3()
    before = tensors_of(model)
    compiled = ts.compile(
        model, rules=[ts.Rule("buffers", path="block")], plugins=[StrategyPlugin("buffers", double_buffers)]
    )
    assert compiled.block.offset.dtype == torch.float64
    assert_tensors_unchanged(model, before)
    torch.testing.assert_close(compiled(x), model(x), check_dtype=False)
