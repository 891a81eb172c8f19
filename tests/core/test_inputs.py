"""Tracing inputs (core/inputs.py): the forms of ``inputs=``, recording from ``example_inputs``,
the checks of ``example_inputs``, and the caller's buffers and tensors left as they were.

The providers (caller, ``_make_tracing_inputs``, recorded), their order and the error
that lists them: tests/plugins/builtin/test_inputs.py.
"""

from collections import OrderedDict
from typing import NamedTuple

import pytest
import torch
from modules import Parent, Probe, TracedBranch, outcome
from torch import nn

import torchstitch as ts
from torchstitch.core import inputs as core_inputs

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


class CallsTwice(nn.Module):
    def __init__(self, child, second=2.0, third=None):
        super().__init__()
        self.child = child
        self.second = second
        self.third = third

    def forward(self, x):
        out = self.child(x) + self.child(x * self.second)
        if self.third is not None:
            out = out + self.child(x + self.third)
        return out


class CallsBothSigns(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = TracedBranch()

    def forward(self, x):
        return self.child(x) + self.child(-x)


class CallsOnce(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = TracedBranch()

    def forward(self, x):
        return self.child(x)


class Raises(nn.Module):
    def forward(self, x):
        raise ValueError("boom in the leaf")


class Mid(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(3, 3)
        self.leaf = Raises()

    def forward(self, x):
        return self.leaf(self.pre(x))


class RaisingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = Probe()
        self.mid = Mid()

    def forward(self, x):
        return self.mid(self.first(x))


class BadShapeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = Probe()
        self.wrong = nn.Linear(7, 3)

    def forward(self, x):
        return self.wrong(self.first(x))


@ts.compile_mode("trace")
class NormBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.lin(x))


class WithNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = NormBlock()
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.block(x))


# --------------------------------------------------------------------------
# inputs= forms
# --------------------------------------------------------------------------


def _forms():
    a, b = torch.randn(2, 3), torch.randn(5, 3)
    return [
        pytest.param((a,), 1, id="args-tuple"),
        pytest.param(a, 1, id="tensor"),
        pytest.param({"forward": (a,)}, 1, id="method-dict"),
        pytest.param([(a,), (b,)], 2, id="list-of-tuples"),
        pytest.param([{"forward": (a,)}, {"forward": (b,)}], 2, id="list-of-dicts"),
        pytest.param([(a,), {"forward": (b,)}], 2, id="list-mixed"),
    ]


@pytest.mark.parametrize(("given", "count"), _forms())
def test_inputs_forms_accepted(watch, given, count):
    model = Parent(Probe())
    check = watch(model)
    result = ts.Engine().compile(model, inputs={"child": given})
    check()
    out = outcome(result, "child")
    assert out.inputs_source == "inputs.caller"
    assert out.n_verified == count
    x = torch.randn(3, 3)
    torch.testing.assert_close(result.module(x), model(x))


def test_inputs_for_unknown_path_is_plan_error(watch):
    model = Parent(Probe())
    check = watch(model)
    with pytest.raises(ts.PlanError) as info:
        ts.compile(model, inputs={"chlid": (torch.randn(2, 3),)})
    assert "'chlid'" in str(info.value)
    check()


def test_inputs_of_wrong_form_is_tracing_inputs_error(watch):
    model = Parent(Probe())
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        ts.compile(model, inputs={"child": "not inputs"})
    assert info.value.path == "child"
    assert "'child'" in str(info.value)
    check()


# --------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------


def test_recording_keeps_two_distinct_calls_by_default():
    model = CallsTwice(Probe(), third=5.0)  # three distinct calls; limit max(2, 1) = 2
    x = torch.randn(4, 3)
    result = ts.Engine().compile(model, example_inputs=(x,))
    out = outcome(result, "child")
    assert out.inputs_source == "inputs.recorded"
    assert out.n_verified == 2
    torch.testing.assert_close(result.module(x), model(x))


def test_recording_keeps_up_to_n_trace_checks_calls():
    model = CallsTwice(Probe(), third=5.0)
    x = torch.randn(4, 3)
    result = ts.Engine(n_trace_checks=3).compile(model, example_inputs=(x,))
    assert outcome(result, "child").n_verified == 3
    result = ts.Engine(n_trace_checks=5).compile(model, example_inputs=(x,))
    assert outcome(result, "child").n_verified == 3  # only three distinct calls exist


def test_recording_drops_repeated_identical_calls():
    model = CallsTwice(Probe(), second=1.0)  # child(x) twice with the same input
    x = torch.randn(4, 3)
    result = ts.Engine(n_trace_checks=3).compile(model, example_inputs=(x,))
    assert outcome(result, "child").n_verified == 1


def test_traced_branch_caught_when_recording_sees_both_branches(watch):
    model = CallsBothSigns()
    check = watch(model)
    x = torch.rand(4, 3) + 0.1
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(model, example_inputs=(x,))
    err = info.value
    assert err.path == "child"
    assert "'child'" in str(err)
    assert err.strategy == "trace"
    assert err.max_abs_diff > 0 and err.max_abs_diff == err.max_abs_diff  # finite, not NaN
    check()


def test_traced_branch_not_caught_from_a_single_call():
    """The contrast: one recorded call cannot reveal the frozen branch."""
    model = CallsOnce()
    x = torch.rand(4, 3) + 0.1
    result = ts.Engine().compile(model, example_inputs=(x,))
    assert outcome(result, "child").n_verified == 1
    torch.testing.assert_close(result.module(x), model(x))


# --------------------------------------------------------------------------
# example_inputs
# --------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(), (torch.randn(2, 3), torch.randn(2, 3))], ids=["none", "two"])
def test_example_inputs_of_wrong_arity(watch, args):
    model = Parent(Probe())
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        ts.compile(model, example_inputs=args)
    assert info.value.path == ""
    assert "'<root>'" in str(info.value)
    check()


@pytest.mark.parametrize("bad", ["a string", 3, {"x": torch.randn(2, 3)}])
def test_example_inputs_of_wrong_type(watch, bad):
    model = Parent(Probe())
    check = watch(model)
    with pytest.raises(TypeError, match="example_inputs"):
        ts.compile(model, example_inputs=bad)
    check()


def test_example_inputs_single_tensor_accepted():
    model = Parent(Probe())
    x = torch.randn(4, 3)
    result = ts.Engine().compile(model, example_inputs=x)
    assert outcome(result, "child").inputs_source == "inputs.recorded"
    torch.testing.assert_close(result.module(x), model(x))


def test_forward_raising_during_recording_names_deepest_module(watch):
    model = RaisingModel()
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),))
    err = info.value
    assert err.path == "mid.leaf"
    assert "'mid.leaf'" in str(err)
    assert isinstance(err.__cause__, ValueError)
    assert "boom in the leaf" in str(err)
    check()


def test_torch_error_during_recording_names_the_module(watch):
    model = BadShapeModel()
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),))
    assert info.value.path == "wrong"
    assert "'wrong'" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    check()


# --------------------------------------------------------------------------
# buffers
# --------------------------------------------------------------------------


def test_batchnorm_running_stats_restored_after_compile(watch):
    model = WithNorm().train()
    x = torch.randn(8, 3) * 3.0 + 2.0
    check = watch(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = ts.Engine(n_trace_checks=2).compile(model, example_inputs=(x,))
    check()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert model.block.bn.num_batches_tracked.item() == 0
    assert outcome(result, "block").inputs_source == "inputs.recorded"

    # the check above can fail: an eager run in training mode does change the stats
    model(x)
    assert not torch.equal(model.bn.running_mean, before["bn.running_mean"])
    assert not torch.equal(model.block.bn.running_mean, before["block.bn.running_mean"])


def test_batchnorm_compiled_output_matches_eager_in_eval():
    model = WithNorm().eval()
    x = torch.randn(8, 3)
    result = ts.Engine().compile(model, example_inputs=(x,))
    torch.testing.assert_close(result.module(x), model(x))
    # compiled child shares the user's buffers
    assert result.module.block.bn.running_mean.data_ptr() == model.block.bn.running_mean.data_ptr()


@ts.compile_mode("trace")
class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x)


class MutatesInput(nn.Module):
    """Updates its input in place (legal in torch); compiled children are plain."""

    def __init__(self):
        super().__init__()
        self.t = Scale()

    def forward(self, x):
        x.mul_(2.0)
        return self.t(x)


def test_recording_does_not_mutate_example_inputs(watch):
    """The recording run must work on copies: the caller's tensors stay as they were, and a
    correct compile of an input-mutating model verifies against eager on the same values."""
    model = MutatesInput()
    check = watch(model)
    x = torch.ones(2, 3)
    result = ts.Engine().compile(model, example_inputs=(x,))
    check()
    torch.testing.assert_close(x, torch.ones(2, 3))
    assert outcome(result, "t").inputs_source == "inputs.recorded"
    torch.testing.assert_close(result.module(torch.ones(2, 3)), model(torch.ones(2, 3)))


def test_buffers_restored_after_failed_compile(watch):
    @ts.compile_mode("script")
    class Bad(nn.Module):
        def forward(self, x):
            f = lambda t: t + 1.0  # noqa: E731
            return f(x)

    model = WithNorm().train()
    model.bad = Bad()  # registered after block and bn: compiled last, after block's trace
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(torch.randn(8, 3) + 2.0,))
    assert info.value.path == "bad"
    check()


# --------------------------------------------------------------------------
# the helpers over nested inputs and outputs (pytrees)
# --------------------------------------------------------------------------


class Pair(NamedTuple):
    low: torch.Tensor
    high: torch.Tensor


def _nested(x: torch.Tensor):
    return (Pair(x, x * 2), [x + 1, {"k": x, "n": 3}], OrderedDict(o=x), "tag", None)


def test_snapshot_clones_every_tensor_and_keeps_the_containers():
    x = torch.randn(3, requires_grad=True)
    value = _nested(x)
    copy = core_inputs.snapshot(value)
    assert type(copy[0]) is Pair and type(copy[2]) is OrderedDict and copy[3:] == ("tag", None)
    tensors = [copy[0].low, copy[0].high, copy[1][0], copy[1][1]["k"], copy[2]["o"]]
    originals = [x, value[0].high, value[1][0], x, x]
    for tensor, original in zip(tensors, originals):
        torch.testing.assert_close(tensor, original.detach())
        assert tensor.data_ptr() != original.data_ptr() and not tensor.requires_grad
    assert copy[1][1]["n"] == 3


def test_cast_tensors_moves_floating_tensors_only_and_keeps_namedtuples():
    value = (Pair(torch.ones(2), torch.arange(2)), {"k": [torch.zeros(1)]})
    cast = core_inputs.cast_tensors(value, "cpu", torch.float64)
    assert type(cast[0]) is Pair
    assert cast[0].low.dtype == torch.float64 and cast[1]["k"][0].dtype == torch.float64
    assert cast[0].high.dtype == torch.int64  # integer tensors keep their dtype
    torch.testing.assert_close(cast[0].low, torch.ones(2, dtype=torch.float64))


def test_same_inputs_compares_structure_and_values():
    x = torch.randn(2, 3)
    assert core_inputs.same_inputs(_nested(x), _nested(x.clone()))
    assert not core_inputs.same_inputs(_nested(x), _nested(x + 1))
    assert not core_inputs.same_inputs((x,), (x.double(),))  # dtype
    assert not core_inputs.same_inputs((x,), (x.reshape(3, 2),))  # shape
    assert not core_inputs.same_inputs((x, 1), (x, 2))
    assert not core_inputs.same_inputs((x,), (x, x))
    assert not core_inputs.same_inputs({"a": x}, {"b": x})
    assert not core_inputs.same_inputs((x,), ([x],))
    assert not core_inputs.same_inputs((x,), (None,))
