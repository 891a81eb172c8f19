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


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x, src, dst):
        return x + torch.zeros_like(x).index_add(0, dst, torch.tanh(self.lin(x))[src]) * 0.1


class Graph(torch.nn.Module):
    """Glue around repeated layers; ``src`` and ``dst`` are views of one ``edge_index``."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(4, 4)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(3))

    def forward(self, x, edge_index):
        src, dst = edge_index[0], edge_index[1]
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x, src, dst)
        return x.sum(0)


def compile_nested(model: torch.nn.Module, blocks: str, graphs: list) -> torch.nn.Module:
    """The root and ``blocks`` claimed inductor; Dynamo's graphs are appended to ``graphs``."""

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    return ts.compile(
        model,
        rules=[ts.Rule("inductor", path=""), ts.Rule("inductor", path=blocks)],
        strategy_options={"inductor": {"backend": backend}},
        verify=False,
    )


def subgraph_calls(gm: torch.fx.GraphModule) -> list:
    return [n for n in gm.graph.nodes if n.target is torch.ops.higher_order.invoke_subgraph]


def test_inductor_blocks_under_inductor_are_nested_compile_regions(watch):
    """Root and layers claimed inductor: one graph, each layer an invoke_subgraph of one subgraph."""
    model = Graph()
    check = watch(model)
    x, edge_index = torch.randn(5, 4), torch.randint(0, 5, (2, 7))
    graphs: list = []
    compiled = compile_nested(model, "layers.*", graphs)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, edge_index), model(x, edge_index))
    assert len(graphs) == 1, "one graph for the whole model"
    calls = subgraph_calls(graphs[0])
    assert len(calls) == 3, graphs[0].code
    assert len({n.args[0].target for n in calls}) == 1, "the three layers share one subgraph"
    assert all(type(layer) is Layer for layer in model.layers)
    check()


def test_nested_block_with_an_island_is_traced_into_the_outer_graph(watch):
    model = Stack()
    check = watch(model)
    x = torch.randn(2, 4)
    graphs: list = []
    Island.calls = 0
    compiled = compile_nested(model, "blocks.*", graphs)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    assert Island.calls == 6  # three islands ran eagerly in the compiled call, three in eager
    assert graphs, "the blocks' code was compiled"
    assert not any(subgraph_calls(g) for g in graphs), "a block with a graph break cannot be a nested region"
    check()
