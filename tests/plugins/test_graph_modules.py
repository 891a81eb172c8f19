"""One class for GraphModule instances that run the same generated code."""

from __future__ import annotations

import torch

from torchstitch.plugins import graph_modules


def traced(out_features: int = 4, scale: float = 2.0) -> torch.fx.GraphModule:
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, out_features)

        def forward(self, x):
            return torch.tanh(self.linear(x)) * scale

    return torch.fx.symbolic_trace(Net())


def test_same_code_same_key_and_class_per_scratch():
    a, b = traced(), traced()
    assert type(a) is not type(b)  # what fx does: a class per instance
    assert graph_modules.class_key(a) == graph_modules.class_key(b)
    scratch: dict = {}
    assert graph_modules.shared_class(a, scratch) is type(a)
    assert graph_modules.shared_class(b, scratch) is type(a)
    assert type(b) is not type(a), "shared_class must not re-class its argument"
    # another compile call has another scratch: nothing leaks across calls
    assert graph_modules.shared_class(b, {}) is type(b)


def test_weights_and_shapes_are_instance_state_not_code():
    # different parameter shapes: same generated source, still interchangeable
    assert graph_modules.class_key(traced(4)) == graph_modules.class_key(traced(8))


def test_different_code_different_key():
    assert graph_modules.class_key(traced(scale=2.0)) != graph_modules.class_key(traced(scale=3.0))


def test_class_name_and_class_attributes_are_part_of_the_key():
    a = traced()
    renamed = torch.fx.GraphModule(a, a.graph, "Renamed")
    assert graph_modules.class_key(renamed) != graph_modules.class_key(traced())
    b = traced()
    type(b).extra = lambda self: 1  # something set on the class: not interchangeable
    assert graph_modules.class_key(b) != graph_modules.class_key(traced())
