"""The script strategy on fx-generated code: one TorchScript type per distinct code."""

from __future__ import annotations

import pytest
import torch

import torchstitch as ts


class Block(torch.nn.Module):
    """A parent of generated code, as e3nn's tensor products hold their fx kernels."""

    def __init__(self, scale: float = 2.0):
        super().__init__()

        class Kernel(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(4, 4)

            def forward(self, x):
                return torch.tanh(self.linear(x)) * scale

        self.kernel = torch.fx.symbolic_trace(Kernel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel(x) + x


def jit_type(module: torch.jit.ScriptModule):
    return module._c._type()


@pytest.fixture
def script_all():
    return [ts.Rule("script", path="*"), ts.Rule("script", type=torch.fx.GraphModule)]


def test_identical_generated_code_compiles_once(watch, script_all):
    model = torch.nn.ModuleList([Block(), Block(), Block(scale=3.0)])
    check = watch(model)
    classes = [type(block.kernel) for block in model]
    compiled = ts.compile(model, rules=script_all, verify=False)
    x = torch.randn(5, 4)
    for block, eager in zip(compiled, model):
        torch.testing.assert_close(block(x), eager(x))
    # TorchScript's type cache saw one class: one compiled forward for the kernels
    # of blocks 0 and 1, and so one for those blocks too; block 2 runs other code
    assert jit_type(compiled[0].kernel) == jit_type(compiled[1].kernel)
    assert jit_type(compiled[0]) == jit_type(compiled[1])
    assert jit_type(compiled[2].kernel) != jit_type(compiled[0].kernel)
    # the user's modules keep their own classes and attributes
    assert [type(block.kernel) for block in model] == classes
    assert all("__jit_ignored_attributes__" not in block.kernel.__dict__ for block in model)
    check()


def test_generated_code_saves_and_loads(tmp_path, script_all):
    model = torch.nn.ModuleList([Block(), Block()])
    rules = [ts.Rule("script", type=torch.nn.Sequential), *script_all]
    compiled = ts.compile(torch.nn.Sequential(*model), rules=rules, verify=False)
    ts.save(compiled, tmp_path / "model.pt")
    loaded = ts.load(tmp_path / "model.pt").module
    x = torch.randn(3, 4)
    torch.testing.assert_close(loaded(x), model[1](model[0](x)))
    assert jit_type(getattr(loaded, "0")) == jit_type(getattr(loaded, "1"))
