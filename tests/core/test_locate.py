"""ts.locate: which compiled submodules diverge from their eager twins, deepest first.

The compiled models here are mostly built by hand (a submodule swapped for a wrong
one), so that what locate finds depends on locate alone.  That the engine's
VerificationError names the same culprits: tests/core/test_fallback_and_locate.py.
"""

import math

import pytest
import torch
from modules import Block, Leaf, Model, TracedLeaf, x4
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


# no `from __future__ import annotations`: TorchScript reads these classes


class PlusHalf(nn.Module):
    """``inner`` gone wrong: its output plus 0.5."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 0.5


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("cannot run\nsecond line")


class Counts(nn.Module):
    """Counts its calls in a buffer, as BatchNorm's num_batches_tracked does."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.lin(x) * self.calls


def with_wrong_left_b(model):
    """A hand-made "compiled" twin of ``model``: new objects down to left.b, which is wrong."""
    left = Block(model.left.a, PlusHalf(model.left.b))
    return Model(left=left, right=model.right)


def test_by_default_every_swapped_submodule_is_checked_and_the_deepest_reported(watch):
    model = Model()
    compiled = with_wrong_left_b(model)
    check = watch(model)
    (found,) = ts.locate(model, compiled, (x4(),))
    check()
    # <root>, left and left.b all differ from eager: only the deepest is the culprit
    assert found.path == "left.b"
    assert found.max_abs_diff == pytest.approx(0.5, abs=1e-6)
    assert str(found) == f"left.b: {found.detail}"


def test_paths_limit_the_check_to_those_submodules():
    model = Model()
    compiled = with_wrong_left_b(model)
    x = x4()
    assert [d.path for d in ts.locate(model, compiled, (x,), paths=["left", ""])] == ["left"]
    assert ts.locate(model, compiled, (x,), paths=["right", "no.such.path"]) == []


def test_the_root_reads_root_in_a_divergence():
    model = Leaf()
    (found,) = ts.locate(model, PlusHalf(model), x4())
    assert found.path == ""
    assert str(found).startswith("<root>: ")


def test_locate_finds_nothing_when_compiled_equals_eager():
    model = Model(left=Block(a=TracedLeaf()))
    x = x4()
    compiled = ts.compile(model, example_inputs=(x,), rules=[ts.Rule("script", path="right")])
    paths = ["left.a", "right"]
    assert ts.locate(model, compiled, (x,), paths=paths) == []


def test_locate_reports_a_compiled_piece_that_cannot_run():
    model = Model()
    compiled = Model(left=model.left, right=Block(model.right.a, Raises()))
    (found,) = ts.locate(model, compiled, (x4(),), paths=["right.b"])
    assert found.path == "right.b"
    assert found.detail == "raised RuntimeError: cannot run"
    assert math.isnan(found.max_abs_diff)


def test_the_parts_of_one_trace_are_not_run_on_their_own():
    model = Model()
    x = x4()
    traced = ts.trace(model, (x,))
    # torch refuses to call a traced root's submodules alone: locate skips them
    assert ts.locate(model, traced, (x,)) == []
    (found,) = ts.locate(model, PlusHalf(traced), (x,), paths=["", "left"])
    assert found.path == ""


def test_every_run_starts_from_the_callers_buffers_and_leaves_them(watch):
    model = Model(left=Block(a=Counts()))
    # a twin holding the caller's tensors, as torchstitch's compiled pieces do
    twin = Model(left=Block(a=Block(model.left.a, nn.Identity()), b=model.left.b), right=model.right)
    check = watch(model)
    # each run starts from calls == 0: equal outputs, although every run adds one
    assert ts.locate(model, twin, (x4(),)) == []
    check()
    assert model.left.a.calls.item() == 0


def test_example_inputs_are_required():
    model = Leaf()
    with pytest.raises(TypeError, match="example_inputs"):
        ts.locate(model, PlusHalf(model), None)
