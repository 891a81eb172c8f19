"""``CompileContext.notes``: what a strategy says about how it compiled a node reaches the plan."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchstitch as ts


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x).relu()


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return self.block(x) + 1


class NotingPlugin:
    """A strategy that runs the node as is and writes ``notes``."""

    def __init__(self, notes):
        self.notes = notes

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_noting(module, context):
            context.notes.update(self.notes)
            return module

        return [ts.Strategy(name="noting", family="python", compile=compile_noting, needs_inputs=True)]


def _compile(notes):
    model = Model()
    x = torch.randn(4, 3)
    engine = ts.Engine(rules=[ts.Rule("noting", path="block")], plugins=[NotingPlugin(notes)])
    result = engine.compile(model, example_inputs=(x,))
    torch.testing.assert_close(result.module(x), model(x))
    return result


def test_notes_reach_the_outcome_in_order_and_render():
    result = _compile({"dynamic": "atoms: pos[0]", "via": "make_fx"})
    outcome = result.plan["block"].outcome
    assert outcome.notes == (("dynamic", "atoms: pos[0]"), ("via", "make_fx"))
    line = next(line for line in result.plan.render().splitlines() if line.startswith("└── block "))
    assert line.endswith("dynamic: atoms: pos[0], via: make_fx")


def test_notes_survive_json():
    result = _compile({"dynamic": "atoms: pos[0]"})
    again = ts.Plan.from_json(result.plan.to_json())
    assert again["block"].outcome.notes == (("dynamic", "atoms: pos[0]"),)


def test_non_text_notes_are_the_plugins_error():
    with pytest.raises(ts.PluginError) as info:
        _compile({"dims": 3})
    assert info.value.path == "block"
    assert "'dims'" in str(info.value)
    assert "'block'" in str(info.value)
