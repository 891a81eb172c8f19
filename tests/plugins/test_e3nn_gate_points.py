"""e3nn's own gate-points networks compile through torchstitch unchanged."""

import pytest
import torch

import torchstitch as ts
from torchstitch.plugins.export import ExportedModule

pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402

gate_points = pytest.importorskip("e3nn.nn.models.gate_points_2101")

pytestmark = [
    pytest.mark.e3nn,
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
]

IRREPS_IN = o3.Irreps("2x0e + 1x1o")
IRREPS_OUT = o3.Irreps("1x0e + 1x1o")


def network():
    return gate_points.Network(
        irreps_in=IRREPS_IN,
        irreps_hidden="8x0e + 8x0o + 4x1e + 4x1o",
        irreps_out=IRREPS_OUT,
        irreps_node_attr=None,
        irreps_edge_attr=o3.Irreps.spherical_harmonics(2),
        layers=2,
        max_radius=2.5,
        number_of_basis=8,
        radial_layers=1,
        radial_neurons=16,
        num_neighbors=4.0,
        num_nodes=10.0,
        reduce_output=True,
    ).eval()


def data(n_atoms, seed):
    generator = torch.Generator().manual_seed(seed)
    return {
        "pos": 2.0 * torch.randn(n_atoms, 3, generator=generator),
        "x": torch.randn(n_atoms, IRREPS_IN.dim, generator=generator),
    }


@pytest.fixture(scope="module")
def compiled_network():
    torch.manual_seed(0)
    net = network()
    result = ts.Engine().compile(net, example_inputs=(data(10, seed=0),))
    return net, result


def test_compiled_equals_eager_on_other_molecules(compiled_network):
    net, result = compiled_network
    for n_atoms, seed in ((7, 1), (13, 2)):
        batch = data(n_atoms, seed)
        torch.testing.assert_close(result.module(batch), net(batch))


def test_top_stays_in_python_and_e3nn_pieces_compile(compiled_network):
    _, result = compiled_network
    plan = result.plan
    # Compose.forward(self, *input) cannot be scripted; nothing claims the top either
    assert plan[""].region is None and plan["layers.0"].region is None
    compiled = [n for n in plan.walk() if n.outcome is not None and n.strategy in ("script", "trace")]
    assert compiled, "the e3nn pieces (convolutions, gates) compile on their own"
    assert all(n.claim.claimant == "plugin e3nn" for n in compiled)


def test_compiled_network_is_equivariant(compiled_network):
    _, result = compiled_network
    batch = data(9, seed=3)
    torch.manual_seed(4)
    rotation = o3.rand_matrix()
    rotated = {
        "pos": batch["pos"] @ rotation.T,
        "x": batch["x"] @ IRREPS_IN.D_from_matrix(rotation).T,
    }
    expected = result.module(batch) @ IRREPS_OUT.D_from_matrix(rotation).T
    torch.testing.assert_close(result.module(rotated), expected, atol=1e-4, rtol=1e-4)


def test_compiling_leaves_the_network_unchanged(watch):
    net = network()
    check = watch(net)
    compiled = ts.compile(net, example_inputs=(data(8, seed=5),))
    check()
    batch = data(8, seed=6)
    torch.testing.assert_close(compiled(batch), net(batch))


def test_target_export_with_no_rules_exports_e3nns_modules(watch):
    torch.manual_seed(0)
    model = network()
    check = watch(model)
    example = data(10, seed=0)  # 18 edges
    # its top builds the radius graph (data-dependent): tried for export, it stays in Python
    with pytest.warns(ts.TorchstitchWarning, match="root could not be compiled for target 'export'"):
        result = ts.Engine(target="export").compile(model, example_inputs=(example,))

    conv = result.plan["layers.0.first"]
    assert conv.strategy == "export" and conv.claim.kind is ts.ClaimKind.ATTRIBUTE
    assert conv.claim.portable and "'script' claim retargeted to 'export'" in conv.claim.reason
    # e3nn's claims below an export node add nothing: its tensor products are traced with it
    assert result.plan["layers.0.first.tp"].strategy is None
    assert result.plan["layers.0.first.tp"].region == "layers.0.first"
    assert isinstance(result.module.layers[0].first, ExportedModule)
    assert result.plan[""].strategy is None  # in Python around the exported nodes
    # same sizes (the radius graph's edges too): other features on the same positions
    for x in (example["x"], data(10, seed=1)["x"]):
        batch = {"pos": example["pos"], "x": x}
        torch.testing.assert_close(result.module(batch), model(batch))
    check()
