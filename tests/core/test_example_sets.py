"""``example_inputs`` as several input sets: each is recorded and verified, and every
node sees a call from each; sets that are not calls of the same ``forward`` are refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchstitch as ts
from torchstitch.core.inputs import as_example_sets

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


class Atoms(nn.Module):
    """Per-atom features from positions and a species mask."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, pos, mask):
        return self.lin(pos) * mask.unsqueeze(-1)


class Model(nn.Module):
    def __init__(self, child=None):
        super().__init__()
        self.atoms = Atoms() if child is None else child

    def forward(self, pos, mask):
        return self.atoms(pos, mask).sum(0)


def system(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3), torch.ones(n)


class ShapeRecorder:
    """A strategy that keeps the node eager and remembers the shapes of its tracing inputs."""

    def __init__(self):
        self.shapes: list[list[tuple[int, ...]]] = []

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_recording(module, context):
            self.shapes = [[tuple(a.shape) for a in call["forward"]] for call in context.inputs]
            return module

        return [ts.Strategy(name="recording", family="python", compile=compile_recording, needs_inputs=True)]


def test_every_node_sees_a_call_from_every_set():
    recorder = ShapeRecorder()
    model = Model()
    sets = [system(6), system(9)]
    engine = ts.Engine(rules=[ts.Rule("recording", path="atoms")], plugins=[recorder])
    result = engine.compile(model, example_inputs=sets)
    assert recorder.shapes == [[(6, 3), (6,)], [(9, 3), (9,)]]
    for args in [*sets, system(13)]:
        torch.testing.assert_close(result.module(*args), model(*args))


def test_the_root_is_verified_on_every_set():
    model = Model(ts.compile_mode("trace")(Atoms)())
    sets = [system(6), system(9), system(4)]
    result = ts.Engine().compile(model, example_inputs=sets)
    assert result.plan[""].outcome.n_verified == 3
    assert result.plan["atoms"].outcome.n_verified == 3
    for args in sets:
        torch.testing.assert_close(result.module(*args), model(*args))


@ts.compile_mode("trace")
class Branchy(nn.Module):
    def forward(self, pos, mask):
        if pos.shape[0] > 7:  # traced: frozen to the first set's branch
            return pos * 2.0
        return pos - 1.0


def test_a_branch_only_the_second_set_takes_is_caught(watch):
    model = Model(Branchy())
    check = watch(model)
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(model, example_inputs=[system(6), system(9)])
    assert info.value.path == "atoms"
    assert "'atoms'" in str(info.value)
    check()
    # one set does not show it
    small = system(6)
    compiled = ts.compile(model, example_inputs=[small])
    torch.testing.assert_close(compiled(*small), model(*small))


class WrongWhenLarge(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, pos, mask):
        out = self.inner(pos, mask)
        return out + 1.0 if pos.shape[0] > 7 else out


class WrongWhenLargePlugin:
    """A strategy whose result is wrong on larger inputs, with no check of its own."""

    @ts.hookimpl
    def torchstitch_strategies(self):
        return [
            ts.Strategy(
                name="wrong_large", family="python", compile=lambda module, context: WrongWhenLarge(module)
            )
        ]


def test_root_verification_names_the_set_that_differs(watch):
    model = Model()
    check = watch(model)
    engine = ts.Engine(rules=[ts.Rule("wrong_large", path="atoms")], plugins=[WrongWhenLargePlugin()])
    with pytest.raises(ts.VerificationError) as info:
        engine.compile(model, example_inputs=[system(6), system(9)])
    assert info.value.path == ""
    assert "example_inputs set 2 (of 2)" in str(info.value)
    check()


class BatchNormModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.atoms = ts.compile_mode("trace")(Atoms)()
        self.bn = nn.BatchNorm1d(3)

    def forward(self, pos, mask):
        return self.bn(self.atoms(pos, mask))


def test_each_set_runs_from_the_callers_buffers(watch):
    model = BatchNormModel().train()
    check = watch(model)
    sets = [system(6), system(9)]
    compiled = ts.compile(model, example_inputs=sets)
    check()
    assert model.bn.num_batches_tracked.item() == 0
    for args in sets:
        expected = BatchNormModel().train()
        expected.load_state_dict(model.state_dict())
        torch.testing.assert_close(compiled(*args), expected(*args))


# --------------------------------------------------------------------------
# what is one set and what is several
# --------------------------------------------------------------------------


def test_forms_of_example_inputs():
    x, y = torch.randn(2), torch.randn(3)
    assert as_example_sets(None) is None
    assert as_example_sets(x)[0][0] is x
    assert [len(s) for s in as_example_sets((x, y))] == [2]
    assert [len(s) for s in as_example_sets([x, y])] == [2]  # a plain list: one set
    assert [len(s) for s in as_example_sets([(x,), (y,)])] == [1, 1]
    assert [len(s) for s in as_example_sets(((x,), (y,)))] == [2]  # a tuple of tuples: one set


def test_a_plain_list_that_does_not_fit_hints_at_sets(watch):
    model = nn.Linear(3, 3)
    check = watch(model)
    with pytest.raises(ts.TracingInputsError, match=r"\[\(x6,\), \(x9,\)\]") as info:
        ts.compile(model, example_inputs=[torch.randn(6, 3), torch.randn(9, 3)])
    assert info.value.path == ""
    check()


# --------------------------------------------------------------------------
# sets that are not calls of the same forward
# --------------------------------------------------------------------------


class TakesDict(nn.Module):
    def forward(self, data, scale):
        return data["pos"] * scale


BAD_SETS = {
    "argument count": (Model(), [system(6), (torch.randn(9, 3),)], "set 2 (of 2)", "1 positional"),
    "dtype": (
        Model(),
        [system(6), (torch.randn(9, 3, dtype=torch.float64), torch.ones(9))],
        "set 2 (of 2) argument 'pos'",
        "dtype torch.float64",
    ),
    "dimensions": (
        Model(),
        [system(6), system(9), (torch.randn(9, 3, 1), torch.ones(9))],
        "set 3 (of 3)",
        "'pos'",
    ),
    "nesting": (
        TakesDict(),
        [({"pos": torch.randn(6, 3)}, 2.0), ({"pos": torch.randn(9, 3), "z": torch.ones(9)}, 2.0)],
        "set 2 (of 2) argument 'data'",
        "nested differently",
    ),
    "leaf type": (
        TakesDict(),
        [({"pos": torch.randn(6, 3)}, 2.0), ({"pos": torch.randn(9, 3)}, torch.tensor(2.0))],
        "set 2 (of 2) argument 'scale'",
        "a Tensor where set 1 has a float",
    ),
}


@pytest.mark.parametrize("case", BAD_SETS, ids=list(BAD_SETS))
@pytest.mark.parametrize("call", ["compile", "plan"])
def test_sets_of_different_structure_are_refused(watch, case, call):
    model, sets, where, what = BAD_SETS[case]
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        getattr(ts, call)(model, example_inputs=sets)
    message = str(info.value)
    assert info.value.path == ""
    assert where in message and what in message, message
    check()
