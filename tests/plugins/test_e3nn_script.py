"""e3nn's spherical harmonics are scripted for the one ``lmax`` a module uses
(plugins/e3nn/script.py): bit-identical to ``e3nn.util.jit``, and a saved model no
longer carries (nor a load compiles) the branches of every other ``lmax``."""

import copy
import io
import zipfile

import pytest
import torch

pytest.importorskip("e3nn")
import e3nn.util.jit  # noqa: E402
from e3nn import o3  # noqa: E402

from torchstitch.plugins.e3nn import jit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


def saved_code(module: torch.jit.ScriptModule) -> str:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as archive:
        return "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".py"))


@pytest.mark.parametrize("lmax", [0, 1, 2, 3])
@pytest.mark.parametrize("scripted_at_construction", [False, True])
def test_spherical_harmonics_are_bit_identical_to_e3nn_and_carry_one_branch(lmax, scripted_at_construction):
    def build() -> o3.SphericalHarmonics:
        module = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(lmax), normalize=True)
        if scripted_at_construction:  # what e3nn does under jit_mode="script" (no deepcopy then)
            module.sph_func = torch.jit.script(module.sph_func)
        return module

    module = build()
    original = module.sph_func
    x = torch.randn(17, 3, generator=torch.Generator().manual_seed(lmax))

    ours = jit.compile(module, in_place=False)
    theirs = e3nn.util.jit.compile(build())

    assert torch.equal(ours(x), theirs(x))
    assert torch.equal(ours(x), module(x))
    code, e3nns = saved_code(ours), saved_code(theirs)
    assert f"_spherical_harmonics_lmax{lmax}" in code and "_spherical_harmonics_lmax" not in e3nns
    assert 10 * len(code) < len(e3nns)  # e3nn's carries the branches of every lmax up to 11
    assert module.sph_func is original  # the caller's module is not changed


def test_a_saved_and_loaded_model_gives_the_same_results():
    module = o3.SphericalHarmonics(
        o3.Irreps.spherical_harmonics(2), normalize=True, normalization="component"
    )
    compiled = jit.compile(copy.deepcopy(module))
    buffer = io.BytesIO()
    torch.jit.save(compiled, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = torch.randn(9, 3)
    assert torch.equal(loaded(x), module(x))


def test_a_module_with_a_foreign_sph_func_is_scripted_as_it_is():
    module = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(1), normalize=True)

    def _spherical_harmonics(lmax: int, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([x, y, z, x + y], dim=-1)  # not e3nn's: another module defines it

    module.sph_func = _spherical_harmonics
    compiled = jit.compile(copy.deepcopy(module))
    x = torch.randn(5, 3)
    assert torch.equal(compiled(x), module(x))
    assert "_spherical_harmonics_lmax" not in saved_code(compiled)


#: e3nn 0.4's layout (MACE's e3nn): ``forward`` calls the module-level function, scripted at
#: import; the function is e3nn's own (its source is copied in below)
E3NN_04_MODULE = """
import math

import torch
from e3nn.util.jit import compile_mode


@torch.jit.script
{function}

@compile_mode("script")
class SphericalHarmonics(torch.nn.Module):
    _lmax: int

    def __init__(self, lmax: int):
        super().__init__()
        self._lmax = lmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.normalize(x, dim=-1)
        return _spherical_harmonics(self._lmax, x[..., 0], x[..., 1], x[..., 2])
"""


@pytest.fixture
def e3nn_04(tmp_path, monkeypatch):
    """A module laid out as e3nn 0.4's ``o3/_spherical_harmonics.py``, under ``e3nn.``."""
    import importlib.util
    import inspect
    import sys

    from e3nn.o3 import _spherical_harmonics as current

    name = "e3nn.torchstitch_test_spherical_harmonics_04"
    path = tmp_path / "spherical_harmonics_04.py"
    path.write_text(E3NN_04_MODULE.format(function=inspect.getsource(current._spherical_harmonics)))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("lmax", [1, 2])
def test_e3nn_04s_module_level_function_is_cut_too(e3nn_04, lmax):
    module = e3nn_04.SphericalHarmonics(lmax)
    x = torch.randn(11, 3, generator=torch.Generator().manual_seed(lmax))

    ours = jit.compile(module, in_place=False)
    theirs = e3nn.util.jit.compile(copy.deepcopy(module))

    assert torch.equal(ours(x), theirs(x)) and torch.equal(ours(x), module(x))
    assert ours.original_name == "SphericalHarmonics"
    code, e3nns = saved_code(ours), saved_code(theirs)
    assert f"_spherical_harmonics_lmax{lmax}" in code and "_spherical_harmonics_lmax" not in e3nns
    assert 10 * len(code) < len(e3nns)
    assert type(module) is e3nn_04.SphericalHarmonics  # the caller's module is not changed
    buffer = io.BytesIO()
    torch.jit.save(ours, buffer)
    buffer.seek(0)
    assert torch.equal(torch.jit.load(buffer)(x), module(x))
