"""target="export" with no rules: who claims says whether a claim may be retargeted (issue 14)."""

import pytest
import torch

import torchstitch as ts
from torchstitch.plugins.export import ExportedModule

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x)) * 2


class Claims:
    """A third-party plugin claiming every ``Scaled`` 'script', portable or not."""

    name = "claims"

    def __init__(self, portable):
        self.portable = portable

    @ts.hookimpl
    def torchstitch_claim(self, module):
        if type(module) is Scaled:
            return ts.Claim("script", ts.ClaimKind.RULE, "plugin claims", "scriptable", portable=self.portable)
        return None


class Holder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 1


def test_a_third_party_portable_claim_goes_to_export(watch):
    model = Holder(Scaled())
    check = watch(model)
    x = torch.randn(4, 3)
    result = ts.Engine(target="export", plugins=[Claims(portable=True)]).compile(model, example_inputs=(x,))
    node = result.plan["inner"]
    assert node.strategy == "export"
    assert node.claim.portable and node.claim.claimant == "plugin claims"
    assert "'script' claim retargeted to 'export'" in node.claim.reason
    assert isinstance(result.module.inner, ExportedModule)
    torch.testing.assert_close(result.module(x), model(x))
    # the plan's JSON keeps the field
    assert ts.Plan.from_json(result.plan.to_json())["inner"].claim.portable
    check()


def test_the_same_claim_not_portable_is_refused():
    with pytest.raises(ts.PlanError, match=r"1 node\(s\) cannot go to target 'export':\n  inner: 'script'"):
        ts.plan(Holder(Scaled()), target="export", plugins=[Claims(portable=False)])


@ts.compile_mode("script")
class Branchy(torch.nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x
        return -x


class TwoBranches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first = Branchy()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 3), Branchy())

    def forward(self, x):
        return self.body(self.first(x))


def test_a_users_script_decorator_is_refused_one_node_per_line(watch):
    model = TwoBranches()
    check = watch(model)
    with pytest.raises(ts.PlanError) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),), target="export")
    lines = str(info.value).splitlines()
    assert "2 node(s) cannot go to target 'export':" in lines[0]
    assert lines[1].startswith("  first: 'script' claimed by @compile_mode on ")
    assert lines[2].startswith("  body.1: 'script' claimed by @compile_mode on ")
    assert info.value.path == "first"
    assert "torch.cond" in lines[3]
    check()


def test_a_model_nothing_claims_is_exported_at_the_root(watch):
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    check = watch(model)
    x = torch.randn(4, 3)
    result = ts.Engine(target="export").compile(model, example_inputs=(x,))
    root = result.plan[""]
    assert root.strategy == "export"
    assert root.claim.kind is ts.ClaimKind.DEFAULT and root.claim.claimant == "target='export'"
    assert result.plan["0"].region == ""
    assert isinstance(result.module, ExportedModule)
    torch.testing.assert_close(result.module(x), model(x))
    check()


def test_without_a_target_a_model_nothing_claims_stays_in_python():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with pytest.warns(ts.TorchstitchWarning, match="nothing was compiled"):
        result = ts.Engine().compile(model, example_inputs=(torch.randn(2, 3),))
    assert result.plan[""].strategy is None


# -- e3nn's own network ------------------------------------------------------------

pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402

gate_points = pytest.importorskip("e3nn.nn.models.gate_points_2101")

IRREPS_IN = o3.Irreps("2x0e + 1x1o")


def network():
    return gate_points.Network(
        irreps_in=IRREPS_IN,
        irreps_hidden="4x0e + 4x0o + 2x1e + 2x1o",
        irreps_out="1x0e + 1x1o",
        irreps_node_attr=None,
        irreps_edge_attr=o3.Irreps.spherical_harmonics(2),
        layers=1,
        max_radius=2.5,
        number_of_basis=4,
        radial_layers=1,
        radial_neurons=8,
        num_neighbors=4.0,
        num_nodes=10.0,
        reduce_output=True,
    ).eval()


def features(n_atoms, seed):
    return torch.randn(n_atoms, IRREPS_IN.dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.e3nn
def test_e3nn_network_exports_with_no_rules(watch):
    torch.manual_seed(0)
    model = network()
    check = watch(model)
    pos = 2.0 * torch.randn(10, 3, generator=torch.Generator().manual_seed(0))  # 18 edges
    example = {"pos": pos, "x": features(10, 0)}
    result = ts.Engine(target="export").compile(model, example_inputs=(example,))

    conv = result.plan["layers.0.first"]
    assert conv.strategy == "export" and conv.claim.kind is ts.ClaimKind.ATTRIBUTE
    assert conv.claim.portable and "'script' claim retargeted to 'export'" in conv.claim.reason
    # e3nn's claims below an export node add nothing: its tensor products are traced with it
    assert result.plan["layers.0.first.tp"].strategy is None
    assert result.plan["layers.0.first.tp"].region == "layers.0.first"
    assert isinstance(result.module.layers[0].first, ExportedModule)
    # the model itself holds claims, so its root stays in Python around the exported nodes
    assert result.plan[""].strategy is None
    for x in (example["x"], features(10, 1)):  # same sizes: the graph's edges stay the same
        batch = {"pos": pos, "x": x}
        torch.testing.assert_close(result.module(batch), model(batch))
    check()
