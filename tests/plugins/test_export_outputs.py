"""Asking an export for some of a model's outputs (docs/deploying.md, "Only the outputs you use").

A wrapper module that returns only energies and forces of a model that also computes the
virial and the stress: what it drops is dropped from the exported program, the part of
``torch.autograd.grad`` that only the virial needs included, and what it keeps equals eager.
"""

import pytest
import torch

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class Potential(torch.nn.Module):
    """Energy of a cluster in a cell, forces, virial and stress: the way NequIP computes them
    (one ``autograd.grad`` for the positions and a strain on them)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.enable_grad():
            strain = torch.zeros(3, 3, dtype=data["pos"].dtype).requires_grad_(True)
            pos = data["pos"].clone().requires_grad_(True)
            strained = pos + pos @ strain
            energy = self.net(strained).sum()
            grad_pos, grad_strain = torch.autograd.grad(energy, [pos, strain])
        virial = -grad_strain
        volume = torch.linalg.det(data["cell"])
        return {"energy": energy.detach(), "forces": -grad_pos, "virial": virial, "stress": virial / volume}


class EnergyForces(torch.nn.Module):
    """The wrapper of docs/deploying.md: the model, returning only what the caller uses."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(data)
        return {"energy": out["energy"], "forces": out["forces"]}


def system(n: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(n)
    return {"pos": torch.randn(n, 3, generator=generator), "cell": 4 * torch.eye(3)}


def exported(model: torch.nn.Module) -> torch.nn.Module:
    return ts.compile(model, target="export", example_inputs=[(system(5),), (system(7),)])


def operators(compiled: torch.nn.Module) -> list[str]:
    program = compiled.program
    return [str(node.target) for node in program.graph.nodes if node.op == "call_function"]


def test_the_outputs_a_wrapper_drops_leave_the_program_and_the_rest_equals_eager():
    torch.manual_seed(0)
    model = Potential()
    full, pruned = exported(model), exported(EnergyForces(model))
    data = system(11)  # a size never seen at compile time
    expected = model(data)
    got = pruned(data)
    assert sorted(got) == ["energy", "forces"]
    for key in got:
        torch.testing.assert_close(got[key], expected[key])
    full_ops, pruned_ops = operators(full), operators(pruned)
    # the stress's determinant, and the strain's gradient (pos^T @ grad: one matmul fewer)
    assert "aten.linalg_det.default" in full_ops or "aten._linalg_det.default" in full_ops
    assert not any("linalg_det" in op for op in pruned_ops)
    assert pruned_ops.count("aten.mm.default") < full_ops.count("aten.mm.default")


def test_nothing_in_an_exported_make_fx_graph_is_left_unused():
    compiled = exported(EnergyForces(Potential()))
    program = compiled.program
    unused = [
        node.name
        for node in program.graph.nodes
        if node.op == "call_function" and not node.users and not node.is_impure()
    ]
    assert unused == []
