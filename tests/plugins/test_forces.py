"""Forces: energies and -dE/dpos through torch.autograd.grad inside forward, exported."""

import pytest
import torch

import torchstitch as ts
from torchstitch.plugins.export import whole_model_rules

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class PairEnergy(torch.nn.Module):
    """A smooth per-atom energy of positions (no neighbour list: tiny and shape-generic)."""

    def __init__(self):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))

    def forward(self, pos):
        return self.mlp(torch.sin(pos)).sum()


class EnergyForces(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.energy = PairEnergy()

    def forward(self, pos):
        with torch.enable_grad():
            pos = pos.detach().requires_grad_(True)
            energy = self.energy(pos)
            (grad,) = torch.autograd.grad([energy], [pos])
        return energy.detach(), -grad


DIMS = {"atoms": {"pos": 0}}


def make_model():
    torch.manual_seed(0)
    return EnergyForces().eval()


def test_forces_export_with_make_fx_matches_eager(tmp_path, watch):
    model = make_model()
    check = watch(model)
    engine = ts.Engine(
        rules=whole_model_rules(), strategy_options={"export": {"dims": DIMS, "make_fx": True}}
    )
    result = engine.compile(model, example_inputs=(torch.randn(5, 3),))
    pos = torch.randn(9, 3)
    energy, forces = result.module(pos)
    expected_energy, expected_forces = model(pos)
    torch.testing.assert_close(energy, expected_energy)
    torch.testing.assert_close(forces, expected_forces)
    path = tmp_path / "forces.pt2"
    result.save(str(path))
    loaded = ts.load(path)
    torch.testing.assert_close(loaded(pos)[1], expected_forces)
    check()


def test_forces_with_make_fx_forbidden_fail_with_the_torch_message_and_the_cure(watch):
    model = make_model()
    check = watch(model)
    options = {"dims": DIMS, "make_fx": False}
    engine = ts.Engine(rules=whole_model_rules(), strategy_options={"export": options})
    with pytest.raises(
        ts.NodeCompileError, match=r"fake tensor in the exported program constant's list.*'make_fx': True"
    ) as info:
        engine.compile(model, example_inputs=(torch.randn(5, 3),))
    assert info.value.path == ""
    check()


def test_forces_export_through_make_fx_without_being_asked(watch):
    model = make_model()
    check = watch(model)
    sets = [(torch.randn(6, 3),), (torch.randn(9, 3),)]
    result = ts.Engine(target="export").compile(model, example_inputs=sets[0], inputs={"": sets})
    assert dict(result.plan[""].outcome.notes) == {"dynamic": "s0 = pos[0]", "via": "make_fx"}
    pos = torch.randn(13, 3)
    for got, expected in zip(result.module(pos), model(pos)):
        torch.testing.assert_close(got, expected)
    check()


def _forces(energy, pos):
    """Forces in a module-level helper, as MACE computes them (forward -> helper -> grad)."""
    (grad,) = torch.autograd.grad([energy], [pos])
    return -grad


class HelperForces(EnergyForces):
    def forward(self, pos):
        with torch.enable_grad():
            pos = pos.detach().requires_grad_(True)
            energy = self.energy(pos)
            forces = _forces(energy, pos)
        return energy.detach(), forces


@pytest.mark.parametrize(
    "model_class, ways",
    [(EnergyForces, [True]), (HelperForces, [True]), (PairEnergy, [False])],
    ids=["grad-in-forward", "grad-in-a-helper", "no-grad"],
)
def test_a_region_that_calls_autograd_grad_is_traced_with_make_fx_first(
    model_class, ways, watch, monkeypatch
):
    """No plain export that can only fail once it has traced everything: make_fx straight away."""
    from torchstitch.plugins.export import strategy

    tried = []
    trace_and_export = strategy._trace_and_export

    def spy(module, args, spec_of, make_fx, options):
        tried.append(make_fx)
        return trace_and_export(module, args, spec_of, make_fx, options)

    monkeypatch.setattr(strategy, "_trace_and_export", spy)
    torch.manual_seed(0)
    model = model_class().eval()
    check = watch(model)
    sets = [(torch.randn(6, 3),), (torch.randn(9, 3),)]
    compiled = ts.compile(model, target="export", example_inputs=sets)
    assert tried == ways
    assert dict(ts.plan_of(compiled)[""].outcome.notes).get("via") == ("make_fx" if ways == [True] else None)
    pos = torch.randn(13, 3)
    torch.testing.assert_close(compiled(pos), model(pos))
    check()
