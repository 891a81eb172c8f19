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
            return ts.Claim(
                "script", ts.ClaimKind.RULE, "plugin claims", "scriptable", portable=self.portable
            )
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
    # the root left in Python (else it goes to the target and inlines the portable claim)
    engine = ts.Engine(target="export", plugins=[Claims(portable=True)], rules=[ts.Rule(None, path="")])
    result = engine.compile(model, example_inputs=(x,))
    node = result.plan["inner"]
    assert node.strategy == "export"
    assert node.claim.portable and node.claim.claimant == "plugin claims"
    assert "'script' claim retargeted to 'export'" in node.claim.reason
    assert isinstance(result.module.inner, ExportedModule)
    torch.testing.assert_close(result.module(x), model(x))
    # the plan's JSON keeps the field
    assert ts.Plan.from_json(result.plan.to_json())["inner"].claim.portable
    check()


@pytest.mark.parametrize("portable", [False, True])
def test_inside_an_export_region_only_a_portable_claim_is_inlined(portable):
    """A portable claim only said the module *can* be compiled: the enclosing export inlines
    it. One that is not is exported at its own node first, so a failure is reported there."""
    plan = ts.plan(
        Holder(Scaled()),
        target="export",
        plugins=[Claims(portable=portable)],
        rules=[ts.Rule("export", path="")],
    )
    assert plan["inner"].region == ("" if portable else "inner")
    assert (plan["inner"].claim is None) is portable
    if not portable:
        assert plan["inner"].strategy == "export"
        assert "'script' claim retargeted to 'export'" in plan["inner"].claim.reason


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
    with pytest.warns(ts.TorchstitchWarning, match="nothing was compiled") as caught:
        result = ts.Engine().compile(model, example_inputs=(torch.randn(2, 3),))
    assert result.plan[""].strategy is None
    # with the export plugin installed, the warning names the export road first
    (message,) = [str(w.message) for w in caught if "nothing was compiled" in str(w.message)]
    assert "ts.compile(model, target='export', example_inputs=...)" in message
