"""The benchmarks' reference network (tests/reference_models.py: GatePoints) compiles.

GatePoints is BASELINES.md's reference network: e3nn's gate-points ``Convolution`` and
``Gate`` per layer under a scriptable top module.
"""

import copy

import pytest
import torch

import torchstitch as ts

pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402
from e3nn.util import jit as e3nn_jit  # noqa: E402
from reference_models import GatePoints, atoms  # noqa: E402

pytestmark = [
    pytest.mark.e3nn,
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def model_and_result():
    torch.manual_seed(0)
    model = GatePoints(n_layers=2, lmax=2, channels=4).eval()
    example = atoms(16, seed=1, density=0.2)
    return model, ts.Engine().compile(model, example_inputs=example)


def _rotate(output: torch.Tensor, rotation: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    return output @ irreps.D_from_matrix(rotation).T


def test_compiled_equals_eager_on_other_atoms(model_and_result):
    model, result = model_and_result
    assert isinstance(result.module, torch.jit.ScriptModule)
    for n_atoms, seed in ((11, 2), (23, 3)):  # other sizes than the example
        x = atoms(n_atoms, seed=seed, density=0.2)
        torch.testing.assert_close(result.module(*x), model(*x))


def test_output_is_invariant_and_equivariant(model_and_result):
    model, result = model_and_result
    pos, species, edge_index = atoms(20, seed=4, density=0.2)
    rotation = o3.rand_matrix()
    out = result.module(pos, species, edge_index)
    rotated = result.module(pos @ rotation.T, species, edge_index)
    assert model.irreps_out == o3.Irreps("0e + 1o") and out.shape == (4,)
    assert out[1:].abs().max() > 1e-6, "a vector output of zero would make the check vacuous"
    torch.testing.assert_close(rotated[0], out[0], atol=1e-5, rtol=1e-4)  # invariant
    torch.testing.assert_close(rotated, _rotate(out, rotation, model.irreps_out), atol=1e-5, rtol=1e-4)


def test_plan_shows_convolution_claimed_by_e3nn(model_and_result):
    _, result = model_and_result
    plan = result.plan
    assert plan[""].claim.kind is ts.ClaimKind.DECORATOR
    for layer in ("layers.0", "layers.1"):
        for piece in ("conv", "gate"):
            node = plan[f"{layer}.{piece}"]
            assert node.strategy == "script", (layer, piece, node.strategy)
            assert node.claim.claimant == "plugin e3nn"
    # the Convolution's own pieces: tensor products, radial MLP (e3nn compile modes)
    for piece in ("sc", "lin1", "fc", "tp", "lin2"):
        node = plan[f"layers.0.conv.{piece}"]
        assert node.claim is not None and node.claim.claimant == "plugin e3nn", piece


def test_e3nn_jit_script_works_too():
    torch.manual_seed(0)
    model = GatePoints(n_layers=1, lmax=1, channels=4).eval()
    scripted = e3nn_jit.script(copy.deepcopy(model))
    assert isinstance(scripted, torch.jit.ScriptModule)
    x = atoms(14, seed=5, density=0.2)
    torch.testing.assert_close(scripted(*x), model(*x))


@pytest.mark.slow
@pytest.mark.parametrize(
    "rules",
    [
        [
            ts.Rule("unsupported", path=""),
            ts.Rule("inductor", path="layers.*"),
            ts.Rule(None, path="layers.*.**"),
        ],
        [ts.Rule("inductor", path=""), ts.Rule("inductor", path="layers.*"), ts.Rule(None, path="**")],
    ],
    ids=["regional", "nested"],
)
def test_torch_compile_layouts_of_docs_deploying(rules, watch):
    """The two torch.compile layouts docs/deploying.md shows, on e3nn's generated code with
    ``edge_index[0]``/``edge_index[1]`` (aliasing views) passed into every layer."""
    torch.manual_seed(0)
    model = GatePoints(n_layers=3, lmax=1, channels=4).eval()
    check = watch(model)
    example = atoms(12, seed=2, density=0.2)
    torch._dynamo.reset()
    result = ts.compile(
        model, example_inputs=example, rules=rules, strategy_options={"inductor": {"backend": "aot_eager"}}
    )
    other = atoms(14, seed=3, density=0.2)
    with torch.no_grad():
        torch.testing.assert_close(result(*other), model(*other), atol=1e-5, rtol=1e-5)
    check()
