"""The e3nn plugin: e3nn's compile modes as claims, irreps-based tracing inputs, jitable fx code.

e3nn's building blocks compile through ts.compile / ts.script (as e3nn's
assert_auto_jitable would check them): equal to eager, still equivariant,
rejecting inputs of the wrong shape, and the caller's module untouched.
"""

import subprocess
import sys
import warnings

import pytest
import torch

import torchstitch as ts

pytest.importorskip("e3nn")
import e3nn  # noqa: E402
import e3nn.nn  # noqa: E402
import e3nn.o3  # noqa: E402
from e3nn.o3 import Irreps  # noqa: E402
from e3nn.util.jit import compile_mode as e3nn_compile_mode  # noqa: E402
from e3nn.util.test import assert_equivariant  # noqa: E402

pytestmark = [
    pytest.mark.e3nn,
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
]

o3 = e3nn.o3
enn = e3nn.nn


# ---------------------------------------------------------------------------
# e3nn's building blocks: (factory, irreps_in (list, one per argument), irreps_out)
# ---------------------------------------------------------------------------


def _linear():
    return o3.Linear("2x0e + 1x1o + 1x2e", "3x0e + 2x1o + 1x2e")


def _tensor_product():
    return o3.TensorProduct(
        "2x1o",
        "1x1o",
        "2x0e + 2x1e",
        [(0, 0, 0, "uvu", True), (0, 0, 1, "uvu", True)],
    )


def _fc_tensor_product():
    return o3.FullyConnectedTensorProduct("2x0e + 1x1o", "1x0e + 1x1o", "3x0e + 2x1o + 1x1e")


def _norm():
    return o3.Norm("2x0e + 1x1o + 1x2e")


def _spherical_harmonics():
    return o3.SphericalHarmonics([0, 1, 2], normalize=True, normalization="component")


def _gate():
    return enn.Gate("4x0e", [torch.relu], "2x0e", [torch.sigmoid], "2x1o")


def _fc_net():
    return enn.FullyConnectedNet([3, 8, 4], torch.relu)


BLOCKS = {
    # name: (factory, e3nn's mode of the root, irreps_in, irreps_out)
    "Linear": (_linear, "script", ["2x0e + 1x1o + 1x2e"], ["3x0e + 2x1o + 1x2e"]),
    "TensorProduct": (_tensor_product, "script", ["2x1o", "1x1o"], ["2x0e + 2x1e"]),
    "FullyConnectedTensorProduct": (
        _fc_tensor_product,
        "script",
        ["2x0e + 1x1o", "1x0e + 1x1o"],
        ["3x0e + 2x1o + 1x1e"],
    ),
    "Norm": (_norm, "trace", ["2x0e + 1x1o + 1x2e"], ["4x0e"]),
    "SphericalHarmonics": (_spherical_harmonics, "script", ["1x1o"], ["1x0e + 1x1o + 1x2e"]),
    "Gate": (_gate, "script", ["4x0e + 2x0e + 2x1o"], ["4x0e + 2x1o"]),
    "FullyConnectedNet": (_fc_net, "script", ["3x0e"], ["4x0e"]),
}

COMPILERS = {"compile": ts.compile, "script": ts.script}


def _rand_args(irreps_in, batch=5):
    return tuple(Irreps(irreps).randn(batch, -1) for irreps in irreps_in)


@pytest.mark.parametrize("how", sorted(COMPILERS))
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_compiles_like_eager_and_stays_equivariant(name, how, watch):
    factory, _, irreps_in, irreps_out = BLOCKS[name]
    module = factory()
    check = watch(module)
    compiled = COMPILERS[how](module)
    check()
    assert isinstance(compiled, torch.jit.ScriptModule)
    assert compiled is not module

    for batch in (1, 7):
        args = _rand_args(irreps_in, batch)
        torch.testing.assert_close(compiled(*args), module(*args))

    irreps_in = [Irreps(i) for i in irreps_in]
    irreps_out = [Irreps(i) for i in irreps_out]
    assert_equivariant(compiled, irreps_in=irreps_in, irreps_out=irreps_out)

    # assert_auto_jitable's strict shapes: a wrong feature dimension is an error, not garbage
    bad = list(_rand_args(irreps_in, 3))
    bad[0] = bad[0][..., :-1]
    with pytest.raises((torch.jit.Error, RuntimeError)):
        compiled(*bad)
    check()


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_plan_shows_e3nn_claims(name):
    factory, mode, _, _ = BLOCKS[name]
    plan = ts.plan(factory())
    root = plan[""]
    assert root.strategy == mode
    assert root.claim.kind is ts.ClaimKind.ATTRIBUTE
    assert root.claim.claimant == "plugin e3nn"
    assert "__e3nn_compile_mode__=" in root.claim.reason
    for node in plan.walk():
        if "GraphModule" in node.type_name:  # e3nn's generated code
            assert node.strategy == "script"
            assert node.claim.kind is ts.ClaimKind.RULE
            assert node.claim.claimant == "plugin e3nn"
    assert f"{mode} · attribute by plugin e3nn" in plan.render()


def test_blocking_the_plugin_removes_its_claims():
    lin = _linear()
    plan = ts.plan(lin, plugins=["no:e3nn"])
    assert all(node.claim is None for node in plan.walk())
    compiled = ts.compile(lin, plugins=["no:e3nn"])
    # nothing compiled: a model of its own, still in Python, sharing the caller's weights
    assert type(compiled) is type(lin) and compiled is not lin
    assert compiled.weight is lin.weight
    x = torch.randn(3, lin.irreps_in.dim)
    torch.testing.assert_close(compiled(x), lin(x))


def test_compiling_a_composite_model(watch):
    """A gate-points style block: SH of edge vectors, a radial MLP giving per-edge TP
    weights, a Gate.  The top is scripted, each e3nn part compiled by its own mode."""

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sh = o3.SphericalHarmonics([0, 1], normalize=True)
            self.tp = o3.FullyConnectedTensorProduct(
                "2x0e + 1x1o", "1x0e + 1x1o", "3x0e + 1x1o", shared_weights=False
            )
            self.radial = enn.FullyConnectedNet([1, 8, self.tp.weight_numel], torch.relu)
            self.norm = o3.Norm("3x0e + 1x1o")
            self.gate = enn.Gate("1x0e", [torch.tanh], "1x0e", [torch.sigmoid], "1x1o")

        def forward(self, x, vec):
            w = self.radial(torch.linalg.norm(vec, dim=-1, keepdim=True))
            y = self.tp(x, self.sh(vec), w)
            out = self.gate(y[:, :5])  # 1x0e + 1x0e + 1x1o
            return out, self.norm(y)

    model = Conv()
    check = watch(model)
    x, vec = torch.randn(6, 5), torch.randn(6, 3)
    result = ts.Engine().compile(
        model,
        example_inputs=(x, vec),
        root_strategy=ts.Claim("script", "override", "test"),
    )
    check()
    compiled = result.module
    assert isinstance(compiled, torch.jit.ScriptModule)
    plan = result.plan
    assert plan["norm"].strategy == "trace"
    assert plan["norm"].outcome.inputs_source == "inputs.recorded"
    assert plan["gate.act_scalars.acts.0"].outcome.inputs_source == "inputs.method"
    for a, b in zip(compiled(x, vec), model(x, vec)):
        torch.testing.assert_close(a, b)
    x, vec = torch.randn(9, 5), torch.randn(9, 3)
    for a, b in zip(compiled(x, vec), model(x, vec)):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------
# BatchNorm: e3nn marks it "unsupported"
# ---------------------------------------------------------------------------


def test_batchnorm_alone_stays_in_python(watch):
    bn = enn.BatchNorm("2x0e + 1x1o")
    check = watch(bn)
    plan = ts.plan(bn)
    assert plan[""].strategy == "unsupported"
    assert plan[""].claim.kind is ts.ClaimKind.ATTRIBUTE
    compiled = ts.compile(bn)
    # a model of its own in Python, sharing the caller's tensors: its mode is its own
    assert type(compiled) is type(bn) and compiled is not bn
    assert compiled.running_mean is bn.running_mean
    compiled.eval()
    assert bn.training
    check()


def test_batchnorm_inside_a_scripted_parent_is_unsupported(watch):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = _linear()
            self.bn = enn.BatchNorm("3x0e + 2x1o + 1x2e")

        def forward(self, x):
            return self.bn(self.lin(x))

    model = Model()
    model(Irreps("2x0e + 1x1o + 1x2e").randn(4, -1))  # training-mode run: running stats move
    check = watch(model)
    with pytest.raises(NotImplementedError) as info:
        ts.script(model, example_inputs=(Irreps("2x0e + 1x1o + 1x2e").randn(4, -1),))
    assert isinstance(info.value, ts.UnsupportedModuleError)
    assert info.value.path == "bn"
    assert info.value.claimant == "plugin e3nn"
    check()


def test_forcing_batchnorm_to_script_fails_with_torchs_error(watch):
    bn = enn.BatchNorm("2x0e + 1x1o")
    check = watch(bn)
    with pytest.raises(ts.NodeCompileError, match="script failed on BatchNorm: RuntimeError") as info:
        ts.script(bn)
    assert info.value.path == ""
    assert isinstance(info.value.__cause__, RuntimeError)
    check()


# ---------------------------------------------------------------------------
# claims: torchstitch's own decorator beats e3nn's attribute
# ---------------------------------------------------------------------------


def test_torchstitch_decorator_beats_e3nn_attribute():
    @ts.compile_mode("script")
    class ScriptedNorm(o3.Norm):
        pass

    norm = ScriptedNorm("2x1o")
    root = ts.plan(norm)[""]
    assert root.strategy == "script"
    assert root.claim.kind is ts.ClaimKind.DECORATOR
    assert [(c.kind, c.strategy) for c in root.offers] == [
        (ts.ClaimKind.DECORATOR, "script"),
        (ts.ClaimKind.ATTRIBUTE, "trace"),
    ]
    compiled = ts.compile(norm)
    x = torch.randn(3, 6)
    torch.testing.assert_close(compiled(x), norm(x))

    plain = o3.Norm("2x1o")
    ts.set_compile_mode(plain, None)  # the instance inherits: e3nn's attribute still counts
    assert ts.plan(plain)[""].claim.kind is ts.ClaimKind.ATTRIBUTE
    ts.set_compile_mode(plain, "script")
    assert ts.plan(plain)[""].strategy == "script"


def test_e3nn_instance_attribute_beats_its_class():
    norm = o3.Norm("2x1o")
    norm.__e3nn_compile_mode__ = "script"  # what e3nn's own script() leaves behind
    root = ts.plan(norm)[""]
    assert root.strategy == "script"
    assert "on the instance" in root.claim.reason


# ---------------------------------------------------------------------------
# tracing inputs: the irreps provider is the last resort
# ---------------------------------------------------------------------------


class _HoldsNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = o3.Norm("2x0e + 1x1o")

    def forward(self, x):
        return self.norm(x) * 2.0


def _inputs_source(result, path):
    return result.plan[path].outcome.inputs_source


def test_irreps_inputs_never_beat_recorded_or_caller_inputs(watch):
    model = _HoldsNorm()
    check = watch(model)
    engine = ts.Engine(n_trace_checks=2)
    x = torch.randn(4, 5)

    alone = engine.compile(model)
    assert _inputs_source(alone, "norm") == "e3nn"
    assert alone.plan["norm"].outcome.n_verified == 2

    recorded = engine.compile(model, example_inputs=(x,))
    assert _inputs_source(recorded, "norm") == "inputs.recorded"

    given = engine.compile(model, example_inputs=(x,), inputs={"norm": (torch.randn(3, 5),)})
    assert _inputs_source(given, "norm") == "inputs.caller"
    check()
    for result in (alone, recorded, given):
        torch.testing.assert_close(result.module(x), model(x))


class _WithIndex(torch.nn.Module):
    """An e3nn-style traced module whose second argument is an index tensor (irreps None)."""

    def __init__(self):
        super().__init__()
        self.irreps_in = [Irreps("1x1o"), None]
        self.irreps_out = Irreps("1x1o")

    def forward(self, x, index):
        return x[index]


_WithIndex = e3nn_compile_mode("trace")(_WithIndex)


class _HoldsWithIndex(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gather = _WithIndex()

    def forward(self, x, index):
        return self.gather(x, index) + 1.0


def test_uninferable_e3nn_module_without_inputs_is_a_tracing_inputs_error(watch):
    model = _HoldsWithIndex()
    check = watch(model)
    with pytest.raises(ts.TracingInputsError) as info:
        ts.compile(model)
    error = info.value
    assert error.path == "gather"
    assert error.strategy == "trace"
    assert error.claimant == "plugin e3nn"
    message = str(error)
    assert "e3nn" in message.split("asked, in order:")[1]  # the plugin was asked, and declined
    assert "example_inputs=" in message
    assert "inputs={'gather': (args...)}" in message
    assert "_make_tracing_inputs" in message
    check()

    # given inputs, it compiles
    x, index = torch.randn(5, 3), torch.tensor([4, 0, 0])
    compiled = ts.compile(model, example_inputs=(x, index))
    torch.testing.assert_close(compiled(x, index), model(x, index))
    compiled = ts.compile(model, inputs={"gather": (x, index)})
    torch.testing.assert_close(compiled(x, index), model(x, index))


# ---------------------------------------------------------------------------
# what the plugin must leave alone
# ---------------------------------------------------------------------------


def test_generated_code_of_the_callers_module_is_not_rewritten():
    lin = _linear()
    if not isinstance(lin._compiled_main, torch.fx.GraphModule):
        pytest.skip("this e3nn scripts its generated code at construction: nothing to rewrite")
    code = lin._compiled_main.code
    graph = str(lin._compiled_main.graph)
    scripted = ts.compile(lin)
    assert isinstance(scripted._compiled_main, torch.jit.ScriptModule)
    assert isinstance(lin._compiled_main, torch.fx.GraphModule)
    assert lin._compiled_main.code == code
    assert str(lin._compiled_main.graph) == graph


def test_compiling_leaves_e3nn_optimization_defaults_alone():
    before = e3nn.get_optimization_defaults()
    ts.compile(_HoldsNorm(), example_inputs=(torch.randn(2, 5),))
    ts.script(_linear())
    assert e3nn.get_optimization_defaults() == before


def test_blocks_built_with_scripted_codegen_compile_too():
    """Under jit_mode="script" e3nn scripts its generated code at construction; those
    ScriptModules are compiled leaves and the rest compiles around them."""
    if "jit_mode" not in e3nn.get_optimization_defaults():
        pytest.skip("this e3nn has no jit_mode switch (it always scripts generated code)")
    before = e3nn.get_optimization_defaults()
    try:
        e3nn.set_optimization_defaults(jit_mode="script")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            lin = _linear()
    finally:
        e3nn.set_optimization_defaults(jit_mode=before["jit_mode"])
    assert isinstance(lin._compiled_main, torch.jit.ScriptModule)
    plan = ts.plan(lin)
    assert plan["_compiled_main"].claim is None  # already compiled: no claim, a leaf
    compiled = ts.script(lin)
    x = Irreps("2x0e + 1x1o + 1x2e").randn(3, -1)
    torch.testing.assert_close(compiled(x), lin(x))


def test_plugin_does_not_import_e3nn():
    code = (
        "import sys, torch, torchstitch as ts\n"
        "model = torch.nn.Sequential(torch.nn.Linear(2, 2))\n"
        "ts.plan(model); ts.compile(model)\n"
        "assert 'e3nn' not in sys.modules, 'the e3nn plugin imported e3nn'\n"
        "assert ts.get_plugin_manager().has_plugin('e3nn')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _prepare(module, scratch):
    from torchstitch.plugins import e3nn as plugin
    from torchstitch.plugins.builtin.torchscript.script import STRATEGY

    return plugin.torchstitch_prepare(module=module, node=None, strategy=STRATEGY, scratch=scratch)


class _Contract(torch.nn.Module):
    """Generated-code stand-in that jitable rewrites (tensordot with ``dims=``)."""

    def __init__(self, nested: bool):
        super().__init__()
        weights = torch.nn.Module() if nested else self
        weights.register_buffer("w", torch.randn(3, 2))
        self.weights = weights if nested else None
        self.nested = nested

    def forward(self, x):
        w = self.weights.w if self.nested else self.w
        return torch.tensordot(x, w, dims=([1], [0]))


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested-attribute"])
def test_jitable_rewrite_is_done_once_per_distinct_code(nested, monkeypatch):
    from torchstitch.plugins import e3nn as plugin

    monkeypatch.setattr(plugin, "REWRITE_FOR_TORCHSCRIPT", True)  # as on torch < 2.13
    first, second = (torch.fx.symbolic_trace(_Contract(nested)) for _ in range(2))
    assert first.code == second.code and not torch.equal(
        first.get_buffer(_w(nested)), second.get_buffer(_w(nested))
    )
    scratch: dict = {}
    a, b = _prepare(first, scratch), _prepare(second, scratch)
    for prepared, original in ((a, first), (b, second)):
        assert "dims = " not in prepared.code  # rewritten for TorchScript
        assert prepared.get_buffer(_w(nested)) is original.get_buffer(_w(nested))
        x = torch.randn(4, 3)
        torch.testing.assert_close(torch.jit.script(prepared)(x), original(x))
        assert "dims = " in original.code  # the caller's code is untouched
    if nested:  # nested attributes are rebuilt by fx: no reuse, a fresh rewrite
        assert a.graph is not b.graph
    else:  # the second is the first's rewrite on the second's tensors: no Python generated
        assert type(b) is type(a) and b.graph is a.graph


def _w(nested: bool) -> str:
    return "weights.w" if nested else "w"


def test_identical_tensor_products_compile_once_and_match_eager(watch):
    model = torch.nn.ModuleList(
        e3nn.o3.FullyConnectedTensorProduct("4x0e+2x1o", "1x0e+1x1o", "3x0e+2x1o") for _ in range(3)
    )
    check = watch(model)
    compiled = ts.compile(model, rules=[ts.Rule("script", path="*")])
    x, y = torch.randn(5, 10), torch.randn(5, 4)
    for tp, eager in zip(compiled, model):
        torch.testing.assert_close(tp(x, y), eager(x, y))
    kinds = {tp._c._type().qualified_name() for tp in compiled}
    assert len(kinds) == 1, "one TorchScript type: the three copies compiled once"
    check()


@pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning")
@pytest.mark.skipif(
    tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 13),
    reason="the e3nn plugin rewrites generated code for TorchScript before torch 2.13",
)
def test_torchscript_compiles_generated_code_as_written():
    """The premise of skipping jitable on torch >= 2.13: every generated kernel of the reference
    networks that jitable would rewrite scripts as fx wrote it, to the code jitable's gives."""
    import copy

    from opt_einsum_fx import jitable
    from reference_models import GatePoints, NequIPStyle

    from torchstitch.plugins import e3nn as plugin
    from torchstitch.plugins.builtin.torchscript.script import scriptable_graph_module

    assert not plugin.REWRITE_FOR_TORCHSCRIPT
    checked = 0
    for model in (GatePoints(n_layers=2, lmax=2, channels=4), NequIPStyle(n_layers=2, lmax=2, channels=4)):
        kernels = [
            m
            for m in model.modules()
            if isinstance(m, torch.fx.GraphModule) and any(plugin._needs_jitable(n) for n in m.graph.nodes)
        ]
        seen = _kernel_inputs(model, kernels)
        for kernel in kernels:
            as_written = torch.jit.script(scriptable_graph_module(kernel, {}))
            rewritten = torch.jit.script(torch.fx.GraphModule(kernel, jitable(copy.deepcopy(kernel.graph))))
            assert as_written.code == rewritten.code
            with torch.no_grad():
                torch.testing.assert_close(as_written(*seen[kernel]), kernel(*seen[kernel]))
            checked += 1
    assert checked >= 4


def _kernel_inputs(model: torch.nn.Module, kernels: list) -> dict:
    """The arguments each of ``kernels`` gets in one eager run of ``model`` on random atoms."""
    from reference_models import atoms

    seen: dict = {}

    def record(module, args, output):
        seen.setdefault(module, args)

    hooks = [kernel.register_forward_hook(record) for kernel in kernels]
    try:
        with torch.no_grad():
            model(*atoms(10, seed=4, density=0.2))
    finally:
        for hook in hooks:
            hook.remove()
    return seen
