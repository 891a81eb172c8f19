"""The e3nn plugin for the export family: TorchScript inside e3nn's modules is not size-fixed.

e3nn 0.4.4 (MACE's) scripts its spherical-harmonics kernel and its generated code when a
module is built; e3nn >= 0.5 does the same under ``jit_mode="script"``.  TorchScript reads
sizes as integers, so ``torch.export`` of such a module is fixed to the traced number of
edges.  These tests build those constructs with the installed e3nn and check that the
export is dynamic and equal to eager on a size never seen at compile time.
"""

import math
import warnings

import pytest
import torch

import torchstitch as ts

pytest.importorskip("e3nn")
import e3nn  # noqa: E402
import e3nn.o3 as o3  # noqa: E402

pytestmark = [
    pytest.mark.e3nn,
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
]

if "jit_mode" not in e3nn.get_optimization_defaults():  # pragma: no cover - e3nn < 0.5
    pytest.skip("this e3nn has no jit_mode switch", allow_module_level=True)

#: the edge axis of the block's inputs
DIMS = {"export": {"dims": {"edges": {"features": 0, "vectors": 0}}}}
#: and of its e3nn modules' (SphericalHarmonics(x), TensorProduct(x, y), Linear(features)),
#: for the case where each is exported on its own
EACH_DIMS = {"export": {"dims": {"edges": {"features": 0, "x": 0, "y": 0}}}}


class EdgeBlock(torch.nn.Module):
    """Spherical harmonics of edge vectors, a tensor product with edge features, a linear."""

    def __init__(self):
        super().__init__()
        self.sh = o3.SphericalHarmonics("0e + 1o + 2e", normalize=True)
        self.tp = o3.FullyConnectedTensorProduct("2x0e + 1x1o", "0e + 1o + 2e", "2x0e + 1x1o")
        self.lin = o3.Linear("2x0e + 1x1o", "3x0e")

    def forward(self, features, vectors):
        return self.lin(self.tp(features, self.sh(vectors)))


def scripted_block() -> EdgeBlock:
    """The block as e3nn 0.4.4 builds it: kernel and generated code scripted at construction."""
    before = e3nn.get_optimization_defaults()["jit_mode"]
    try:
        e3nn.set_optimization_defaults(jit_mode="script")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            block = EdgeBlock()
    finally:
        e3nn.set_optimization_defaults(jit_mode=before)
    assert isinstance(block.sh.sph_func, torch.jit.ScriptFunction)
    assert isinstance(block.tp._compiled_main_left_right, torch.jit.ScriptModule)
    assert isinstance(block.lin._compiled_main, torch.jit.ScriptModule)
    return block


def edges(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 5), torch.randn(n, 3)


@pytest.mark.parametrize(
    "rules, options",
    [
        ((ts.Rule(None, path=""),), EACH_DIMS),  # the root left in Python
        ((ts.Rule("export", path=""),), DIMS),
        ((ts.Rule("export", path=""),), {"export": {**DIMS["export"], "make_fx": True}}),
    ],
    ids=["each-module", "in-root-region", "in-root-region-make-fx"],
)
def test_scripted_e3nn_code_exports_dynamic(rules, options, watch):
    """Each e3nn module exported on its own, or inside the root's export region (MACE's case)."""
    block = scripted_block()
    check = watch(block)
    compiled = ts.compile(
        block,
        target="export",
        rules=rules,
        example_inputs=edges(7),
        inputs={"": [edges(7), edges(10)]},
        strategy_options=options,
    )
    for n in (7, 10, 13):  # 13: never seen at compile time
        args = edges(n)
        torch.testing.assert_close(compiled(*args), block(*args))
    check()
    # the caller's TorchScript pieces are still there
    assert isinstance(block.sh.sph_func, torch.jit.ScriptFunction)
    assert isinstance(block.lin._compiled_main, torch.jit.ScriptModule)


def test_symbolic_trace_of_the_block_as_built_is_size_fixed():
    """What the rewrite cures, under make_fx (the way forces are exported): the block as
    built does not trace to a graph for any number of edges; the rewritten block does."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from torchstitch.plugins.e3nn.export import size_independent

    block = scripted_block()
    with pytest.raises(RuntimeError):  # TorchScript's interpreter fails on a symbolic size, or fixes it
        make_fx(block, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*edges(7))(*edges(10))
    rewritten = size_independent(block, {})
    dynamic = make_fx(rewritten, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*edges(7))
    args = edges(10)
    torch.testing.assert_close(dynamic(*args), block(*args))


def _kernel(lmax: int, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.ones_like(x), x, y, z * math.sqrt(3.0)], dim=-1)[..., : (lmax + 1) * (lmax + 1)]


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    _scripted_kernel = torch.jit.script(_kernel)


class GlobalKernel(torch.nn.Module):
    """e3nn 0.4.4's SphericalHarmonics: forward calls a module-level scripted function;
    forces differentiate through it (TorchScript's autograd of the function is size-fixed)."""

    def forward(self, vectors):
        vectors = vectors.clone().requires_grad_(True)
        energy = _scripted_kernel(1, vectors[..., 0], vectors[..., 1], vectors[..., 2]).pow(2).sum()
        return torch.autograd.grad(energy, vectors)[0]


# the rewrite is the e3nn plugin's, for e3nn's classes; this one stands for e3nn 0.4.4's
GlobalKernel.__module__ = "e3nn.o3._spherical_harmonics"


def test_forward_calling_a_scripted_global_runs_its_python_in_the_export():
    """e3nn 0.4.4's SphericalHarmonics case, where MACE's edges were fixed (item 3)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from torchstitch.plugins.e3nn.export import size_independent

    kernel = GlobalKernel()
    rewritten = size_independent(kernel, {})
    assert rewritten is not None and type(rewritten) is not GlobalKernel
    assert type(kernel) is GlobalKernel  # the caller's module keeps its class
    # traced symbolically (as forces are exported), the scripted function fixes the size
    vectors = torch.randn(11, 3)
    fixed = make_fx(kernel, tracing_mode="symbolic")(torch.randn(7, 3))
    with pytest.raises(RuntimeError, match="size"):
        fixed(vectors)
    dynamic = make_fx(rewritten, tracing_mode="symbolic")(torch.randn(7, 3))
    torch.testing.assert_close(dynamic(vectors), kernel(vectors))
