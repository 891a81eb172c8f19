"""The ``aoti`` artifact format: an AOTInductor package of an ``export`` root (one compile: slow)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import torchstitch as ts
from torchstitch.plugins.export import AOTIModule, whole_model_rules

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class EnergyForces(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))

    def forward(self, pos):
        with torch.enable_grad():
            pos = pos.detach().requires_grad_(True)
            energy = self.mlp(torch.sin(pos)).sum()
            (grad,) = torch.autograd.grad([energy], [pos])
        return energy.detach(), -grad


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    torch.manual_seed(0)
    model = EnergyForces().eval()
    options = {"export": {"dims": {"atoms": {"pos": 0}}, "make_fx": True}}
    # the functional path: the plan travels with the compiled module into the package
    compiled = ts.compile(
        model, rules=whole_model_rules(), strategy_options=options, example_inputs=(torch.randn(5, 3),)
    )
    path = tmp_path_factory.mktemp("aoti") / "forces.pt2"
    ts.save(compiled, path, format="aoti")
    return model, compiled, path


@pytest.mark.slow
def test_aoti_package_runs_energies_and_forces_like_eager(package):
    model, compiled, path = package
    loaded = ts.load(path)
    assert loaded.format == "aoti"
    assert isinstance(loaded.module, AOTIModule)
    assert loaded.metadata["plan"] == "embedded"
    assert loaded.plan == ts.plan_of(compiled)
    assert loaded.plan.root.outcome.n_verified >= 1
    pos = torch.randn(11, 3)  # another size: the package is dynamic in "atoms"
    energy, forces = loaded(pos)
    expected_energy, expected_forces = model(pos)
    torch.testing.assert_close(energy, expected_energy)
    torch.testing.assert_close(forces, expected_forces)


@pytest.mark.slow
def test_aoti_package_metadata_names_inputs_and_custom_ops(package):
    _, _, path = package
    meta = ts.load(path).module.metadata
    assert meta["torchstitch.format"] == "aoti"
    assert json.loads(meta["torchstitch.inputs"]) == ["arg0_1"]  # make_fx names the graph's inputs
    assert json.loads(meta["torchstitch.custom_ops"]) == {}
    assert json.loads(meta["torchstitch.libraries"]) == []
    assert meta["torchstitch.torch_version"] == torch.__version__


@pytest.mark.slow
def test_a_loaded_package_leaves_no_temporary_folder_behind_at_exit(package, tmp_path):
    # torch's loader unpacks the package into $TMPDIR and removes the folder in its destructor,
    # which interpreter exit does not reach while a scripted module that calls autograd.grad
    # is alive as well (a process holding both a TorchScript and an AOTI force field)
    _, _, path = package
    script = tmp_path / "both.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import warnings
            warnings.simplefilter("ignore")
            import torch, torchstitch as ts

            class Forces(torch.nn.Module):
                def forward(self, pos):
                    pos = pos.detach().requires_grad_(True)
                    (grad,) = torch.autograd.grad([(pos ** 2).sum()], [pos])
                    assert grad is not None
                    return -grad

            scripted = torch.jit.script(Forces())
            loaded = ts.load({str(path)!r})
            energy, forces = loaded(torch.randn(4, 3))
            assert forces.shape == (4, 3)
            """
        )
    )
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert list(temp.iterdir()) == []


def test_aoti_needs_a_pt2_name_and_an_export_root(tmp_path):
    torch.manual_seed(0)
    compiled = ts.Engine(rules=[ts.Rule("export", path="")]).compile(
        torch.nn.Linear(3, 2), example_inputs=(torch.randn(4, 3),)
    )
    with pytest.raises(ts.ArtifactError, match=r"must be named \*\.pt2"):
        ts.save(compiled, tmp_path / "model.zip", format="aoti")
    scripted = ts.script(torch.nn.Linear(3, 2))
    with pytest.raises(ts.ArtifactError, match=r"format 'aoti' cannot save"):
        ts.save(scripted, tmp_path / "model.pt2", format="aoti")
