"""The inductor plugin: regional torch.compile, shared code for repeated blocks, Python islands."""

import pytest
import torch

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


@ts.compile_mode("unsupported")
class Island(torch.nn.Module):
    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return x + 1


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.island = Island()

    def forward(self, x):
        return self.island(torch.tanh(self.lin(x)))


class Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(3))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_inductor_under_script_and_python_inside_inductor_plan(watch):
    model = Stack()
    check = watch(model)
    plan = ts.plan(model, rules=[ts.Rule("inductor", path="blocks.*")])
    assert plan["blocks.0"].strategy == "inductor"
    assert plan["blocks.0.island"].strategy == "unsupported"  # allowed: runs eagerly inside
    with pytest.raises(ts.PlanError, match=r"claimed 'inductor'.*inside the 'script' region") as info:
        ts.plan(model, rules=[ts.Rule("script", path=""), ts.Rule("inductor", path="blocks.0")])
    assert info.value.path == "blocks.0"
    check()


@pytest.mark.slow
def test_repeated_blocks_compile_once_and_islands_stay_eager(watch):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = Stack()
    check = watch(model)
    x = torch.randn(2, 4)
    expected = model(x)
    # verify=False: nothing runs the compiled blocks before the counting below
    engine = ts.Engine(rules=[ts.Rule("inductor", path="blocks.*")], verify=False)
    result = engine.compile(model, example_inputs=(x,))
    assert all(isinstance(b, torch._dynamo.eval_frame.OptimizedModule) for b in result.module.blocks)
    torch.set_grad_enabled(False)  # block 0's output requires grad otherwise: another guard
    try:
        _count_graphs(result, x, expected)
    finally:
        torch.set_grad_enabled(True)
    check()


def _count_graphs(result, x, expected):
    from torch._dynamo.utils import counters

    result.module.blocks[0](x)  # compiles the block's code (the island is a graph break)
    graphs_for_one_block = counters["stats"]["unique_graphs"]
    assert graphs_for_one_block >= 1
    Island.calls = 0
    torch.testing.assert_close(result.module(x), expected)
    assert Island.calls == 3  # the unsupported child ran in Python, once per block
    # blocks 1 and 2 are other instances of the same class: they reuse the compiled code
    assert counters["stats"]["unique_graphs"] == graphs_for_one_block, dict(counters["stats"])
    assert sum(counters["recompiles"].values()) == 0


def test_repeated_blocks_with_generated_fx_code_share_one_graph(watch):
    """fx gives every GraphModule instance its own class (e3nn's generated tensor-product
    code, say): without sharing, Dynamo's type guards fail in every repeated block."""
    from torch._dynamo.utils import counters

    class FxBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()))

        def forward(self, x):
            return self.inner(x) * 2.0

    model = torch.nn.Sequential(FxBlock(), FxBlock(), FxBlock())
    assert len({type(block.inner) for block in model}) == 3  # what fx does
    check = watch(model)
    x = torch.randn(2, 4)
    torch._dynamo.reset()
    counters.clear()
    compiled = ts.compile(
        model,
        rules=[ts.Rule("inductor", path="*"), ts.Rule(None, path="*.**")],
        strategy_options={"inductor": {"backend": "eager"}},  # Dynamo's graphs, no codegen
        verify=False,
    )
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert sum(counters["recompiles"].values()) == 0
    assert len({type(block.inner) for block in model}) == 3  # the user's modules keep theirs
    check()
