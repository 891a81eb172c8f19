"""The trace strategy: what a trace cannot keep (NamedTuple types, the training mode)
is refused or reported."""

import copy
import json
import warnings
from typing import NamedTuple

import pytest
import torch
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


# --------------------------------------------------------------------------
# NamedTuple outputs
# --------------------------------------------------------------------------


class Halves(NamedTuple):
    low: torch.Tensor
    high: torch.Tensor


class Split(nn.Module):
    def forward(self, x) -> Halves:
        return Halves(x[:, :2] * 2.0, x[:, 2:] - 1.0)


def test_trace_of_a_namedtuple_output_is_refused_naming_both_types(watch):
    model = Split()
    check = watch(model)
    with pytest.raises(ts.VerificationError) as info:
        ts.trace(model, (torch.randn(3, 4),))
    err = info.value
    assert err.path == "" and err.strategy == "trace"
    assert "at output: expected a NamedTuple Halves(low, high), got a tuple of 2" in str(err)
    assert "claim the module 'script'" in str(err)
    check()


def test_script_keeps_the_namedtuple_fields():
    model = Split()
    x = torch.randn(3, 4)
    compiled = ts.script(model, example_inputs=(x,))
    out, expected = compiled(x), model(x)
    assert out._fields == ("low", "high")
    torch.testing.assert_close(out.low, expected.low)
    torch.testing.assert_close(out.high, expected.high)


# --------------------------------------------------------------------------
# the training mode a trace fixes
# --------------------------------------------------------------------------


class Noisy(nn.Module):
    """Not a torch class: depends on the mode because forward reads self.training."""

    def forward(self, x):
        return x * 2.0 if self.training else x


class Block(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(p)
        self.noisy = Noisy()

    def forward(self, x):
        return self.noisy(self.drop(self.norm(self.lin(x))))


class Net(nn.Module):
    def __init__(self, block=None):
        super().__init__()
        self.block = block or Block()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(x))


TRACE_BLOCK = [ts.Rule("trace", path="block")]


def _compile(model, rules=TRACE_BLOCK, **kw):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        engine = ts.Engine(rules=rules, verify=False)
        result = engine.compile(model, example_inputs=(torch.randn(8, 4),), **kw)
    ours = [w for w in seen if issubclass(w.category, ts.TorchstitchWarning)]
    return result, [w for w in ours if not issubclass(w.category, ts.TorchScriptDeprecationWarning)]


def test_trace_in_training_mode_warns_naming_the_node_and_its_mode_dependent_modules():
    model = Net()
    result, warned = _compile(model)
    (warning,) = warned
    text = str(warning.message)
    assert "block (trace: block.norm, block.drop, block.noisy)" in text
    assert "keeps training behaviour after .eval()" in text
    assert warning.filename == __file__
    assert result.plan["block"].outcome.training is True
    # the compiled block really kept training behaviour: eval() does not switch it
    x = torch.randn(8, 4)
    in_eval = copy.deepcopy(model.block).eval()(x)
    assert not torch.allclose(result.module.block.eval()(x), in_eval)


def test_trace_in_eval_mode_records_the_mode_and_does_not_warn():
    model = Net().eval()
    result, warned = _compile(model)
    assert warned == []
    assert result.plan["block"].outcome.training is False
    x = torch.randn(8, 4)
    torch.testing.assert_close(result.module(x), model(x))


def test_modules_whose_mode_changes_nothing_do_not_warn():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.drop = nn.Dropout(0.0)
            self.norm = nn.BatchNorm1d(4, track_running_stats=False)
            self.rnn = nn.GRU(4, 4, dropout=0.0)

        def forward(self, x):
            return self.norm(self.drop(self.lin(x))) + self.rnn(x)[0]

    result, warned = _compile(Net(Plain()))
    assert warned == []
    assert result.plan["block"].outcome.training is True  # recorded all the same


def test_a_scripted_node_follows_eval_and_records_no_fixed_mode():
    result, warned = _compile(Net(), rules=[ts.Rule("script", path="block")])
    assert warned == []
    assert result.plan["block"].outcome.training is None
    model = Net()
    compiled = ts.Engine(rules=[ts.Rule("script", path="block")]).compile(model).module
    x = torch.randn(8, 4)
    torch.testing.assert_close(compiled.block.eval()(x), model.block.eval()(x))


def test_a_separately_scripted_child_of_a_traced_node_is_not_blamed():
    rules = [ts.Rule("trace", path=""), ts.Rule("script", path="block")]
    result, warned = _compile(Net(), rules=rules)
    assert warned == []
    assert result.plan[""].outcome.training is True


def test_the_mode_is_in_the_json_and_the_text_tree():
    result, _ = _compile(Net())
    data = json.loads(result.plan.to_json())
    block = data["root"]["children"][0]
    assert block["path"] == "block" and block["outcome"]["training"] is True
    assert ts.Plan.from_json(result.plan.to_json()) == result.plan
    line = next(line for line in result.plan.render().splitlines() if line.startswith("├── block"))
    assert line.endswith(", train mode")
    eval_plan = _compile(Net().eval())[0].plan
    assert "eval mode" in eval_plan.render()


def test_a_plan_saved_before_the_mode_was_recorded_still_loads():
    result, _ = _compile(Net())
    data = json.loads(result.plan.to_json())
    for node in (data["root"], *data["root"]["children"]):
        if node["outcome"] is not None:
            del node["outcome"]["training"]
    old = ts.Plan.from_json(json.dumps(data))
    assert old["block"].outcome.training is None
    assert old["block"].outcome.seconds == result.plan["block"].outcome.seconds
