"""A realistic e3nn model: the NequIP-style network of tests/reference_models.py."""

import pytest
import torch

import torchstitch as ts

pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402
from reference_models import NequIPStyle, atoms  # noqa: E402

pytestmark = [
    pytest.mark.e3nn,
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
]


@pytest.fixture(scope="module")
def model_and_result():
    torch.manual_seed(0)
    model = NequIPStyle(n_layers=3, lmax=1, channels=8).eval()
    example = atoms(24, seed=1)
    return model, example, ts.Engine().compile(model, example_inputs=example)


def test_compiled_equals_eager_on_new_atoms(model_and_result):
    model, _, result = model_and_result
    assert isinstance(result.module, torch.jit.ScriptModule)
    for seed in (2, 3):
        pos, species, edge_index = atoms(30, seed=seed)  # other sizes than the example
        torch.testing.assert_close(result.module(pos, species, edge_index), model(pos, species, edge_index))


def test_plan_shows_e3nn_claims(model_and_result):
    _, _, result = model_and_result
    plan = result.plan
    assert plan[""].claim.kind is ts.ClaimKind.DECORATOR
    assert plan["layers.0.tp"].strategy == "script"
    assert plan["layers.0.tp"].claim.claimant == "plugin e3nn"
    assert plan["layers.0.radial"].strategy == "script"
    traced = [n for n in plan.walk() if n.strategy == "trace"]
    assert traced and all(n.outcome.n_verified >= 1 for n in traced)
    assert result.verification[""] == 0.0 or result.verification[""] < 1e-5


def test_compiled_energy_is_rotation_invariant(model_and_result):
    _, _, result = model_and_result
    pos, species, edge_index = atoms(30, seed=4)
    rotation = o3.rand_matrix()
    energy = result.module(pos, species, edge_index)
    rotated = result.module(pos @ rotation.T, species, edge_index)
    torch.testing.assert_close(rotated, energy, atol=1e-4, rtol=1e-4)


def test_save_load_round_trip(model_and_result, tmp_path):
    model, _, result = model_and_result
    path = tmp_path / "nequip.pt"
    result.save(path)
    artifact = ts.load(path)
    assert artifact.plan == result.plan
    pos, species, edge_index = atoms(20, seed=5)
    torch.testing.assert_close(artifact.module(pos, species, edge_index), model(pos, species, edge_index))


def test_compile_does_not_change_the_model(watch):
    torch.manual_seed(0)
    model = NequIPStyle(n_layers=2, lmax=1, channels=4).eval()
    check = watch(model)
    compiled = ts.compile(model, example_inputs=atoms(12, seed=6))
    check()
    pos, species, edge_index = atoms(12, seed=7)
    torch.testing.assert_close(compiled(pos, species, edge_index), model(pos, species, edge_index))
