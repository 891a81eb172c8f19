"""Asking an export for some of a model's outputs (docs/deploying.md, "Only the outputs you use").

A wrapper module that returns only energies and forces of a model that also computes the
virial and the stress: what it keeps equals eager, and what it drops is not in its AOTI
package (AOTInductor removes what no output needs, the part of ``torch.autograd.grad``
that only the virial needs included; the exported program itself still holds it).
"""

import zipfile

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


def package_code(compiled: torch.nn.Module, path) -> str:
    """The C++ wrapper AOTInductor generated for ``compiled`` (the package keeps its source)."""
    ts.save(compiled, path, format="aoti")
    with zipfile.ZipFile(path) as archive:
        (wrapper,) = (name for name in archive.namelist() if name.endswith(".wrapper.cpp"))
        return archive.read(wrapper).decode()


def test_a_wrapper_returns_only_what_it_keeps_equal_to_eager():
    torch.manual_seed(0)
    model = Potential()
    pruned = exported(EnergyForces(model))
    data = system(11)  # a size never seen at compile time
    expected, got = model(data), pruned(data)
    assert sorted(got) == ["energy", "forces"]
    for key in got:
        torch.testing.assert_close(got[key], expected[key])


@pytest.mark.slow
def test_the_outputs_a_wrapper_drops_are_not_in_its_aoti_package(tmp_path):
    torch.manual_seed(0)
    model = Potential()
    full = package_code(exported(model), tmp_path / "full.pt2")
    pruned_path = tmp_path / "pruned.pt2"
    pruned = package_code(exported(EnergyForces(model)), pruned_path)
    # the stress's determinant, and the strain's gradient (pos^T @ grad: one matmul fewer)
    assert "linalg_det" in full and "linalg_det" not in pruned
    assert pruned.count("aoti_torch_cpu_mm_out(") < full.count("aoti_torch_cpu_mm_out(")
    data = system(11)
    got, expected = ts.load(pruned_path)(data), model(data)
    assert sorted(got) == ["energy", "forces"]
    for key in got:
        torch.testing.assert_close(got[key], expected[key])
