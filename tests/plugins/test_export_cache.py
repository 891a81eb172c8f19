"""The export family's compile cache: export nodes refitted with the caller's weights, and
AOTInductor packages reused by architecture (``ts.save(..., format="aoti")`` with a cache)."""

import json
import sys
import zipfile

import pytest
import torch
from test_cpp_deploy import (
    deploy_build,  # the C++ loader's build and tensor files
    deploy_check,  # noqa: F401 (the C++ loader, a session fixture)
)
from torch.utils._pytree import tree_leaves

import torchstitch as ts
from torchstitch.plugins.export import AOTIModule, ExportedModule, whole_model_rules
from torchstitch.plugins.export.cache import (
    LAYOUT_FILE,
    PACKAGE_FILE,
    NotRefittable,
    load_exported,
    package_key,
    save_exported,
)
from torchstitch.plugins.toolkit import CompileCache, make_shell

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:torch.export fixed every size:torchstitch.TorchstitchWarning"),
]


class Scaled(torch.nn.Module):
    """A parameter, a persistent and a non-persistent buffer, and a plain tensor attribute."""

    def __init__(self, width=4):
        super().__init__()
        self.lin = torch.nn.Linear(3, width)
        self.register_buffer("scale", torch.rand(width) + 0.5)
        self.register_buffer("shift", torch.randn(width), persistent=False)
        self.table = torch.randn(width)

    def forward(self, x):
        return torch.tanh(self.lin(x)) * self.scale + self.shift + self.table


class EnergyForces(torch.nn.Module):
    """Exported through make_fx (autograd.grad in forward): its program names tensors ``_param_constant0``."""

    def __init__(self):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))
        self.register_buffer("shift", torch.randn(3))

    def forward(self, pos):
        with torch.enable_grad():
            pos = pos.detach().requires_grad_(True)
            energy = self.mlp(torch.sin(pos) + self.shift).sum()
            (grad,) = torch.autograd.grad([energy], [pos])
        return energy.detach(), -grad


FORCES_OPTIONS = {"export": {"dims": {"atoms": {"pos": 0}}, "make_fx": True}}


def export_root(model, example, **options):
    engine = ts.Engine(rules=[ts.Rule("export", path="")], strategy_options={"export": options})
    return engine.compile(model, example_inputs=example).module


def compile_forces(model, cache_dir=None):
    return ts.compile(
        model,
        rules=whole_model_rules(),
        strategy_options=FORCES_OPTIONS,
        example_inputs=(torch.randn(5, 3),),
        cache_dir=cache_dir,
    )


def tensors_of(module):
    return {name: t for name, t in [*module.named_parameters(), *module.named_buffers()]}


def assert_outputs_like(compiled, model, *args):
    for got, want in zip(tree_leaves(compiled(*args)), tree_leaves(model(*args)), strict=True):
        torch.testing.assert_close(got, want)


# -- export nodes --------------------------------------------------------------------


def test_a_loaded_node_uses_the_shells_tensors_and_gives_its_outputs(tmp_path):
    first = Scaled()
    save_exported(export_root(first, (torch.randn(5, 3),)), tmp_path)
    other = Scaled()  # the same architecture, other weights
    loaded = load_exported(tmp_path, make_shell(other))
    assert isinstance(loaded, ExportedModule)
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded(x), other(x))
    assert not torch.allclose(loaded(x), first(x))
    # the program and its unlifted module hold the very tensors of the model
    assert loaded.program.state_dict["lin.weight"] is other.lin.weight
    unlifted = {**tensors_of(loaded.unlifted), "table": loaded.unlifted.table}
    for name, tensor in {**tensors_of(other), "table": other.table}.items():
        assert unlifted[name].data_ptr() == tensor.data_ptr(), name
    with torch.no_grad():
        other.lin.weight.mul_(2)  # an in-place change of the caller's weights shows
    torch.testing.assert_close(loaded(x), other(x))


def test_a_make_fx_program_is_refitted_by_tensor_identity(tmp_path):
    save_exported(compile_forces(EnergyForces().eval()), tmp_path)
    sources = json.loads((tmp_path / "node.json").read_text())["sources"]
    assert sources["_param_constant0"] == "mlp.0.weight"
    other = EnergyForces().eval()
    loaded = load_exported(tmp_path, make_shell(other))
    assert loaded.program.state_dict["_param_constant0"] is other.mlp[0].weight
    assert_outputs_like(loaded, other, torch.randn(9, 3))  # dynamic in atoms, as compiled


def test_a_shell_whose_tensor_does_not_fit_is_refused_naming_the_node(tmp_path):
    save_exported(export_root(Scaled(), (torch.randn(5, 3),)), tmp_path)
    with pytest.raises(NotRefittable, match=r"<root>.*'lin.weight' is float32\[6, 3\]"):
        load_exported(tmp_path, make_shell(Scaled(width=6)))


def test_the_package_key_follows_the_architecture_not_the_weights():
    x = (torch.randn(5, 3),)
    key = package_key(export_root(Scaled(), x).program, {})
    assert package_key(export_root(Scaled(), x).program, {}) == key
    assert package_key(export_root(Scaled(width=5), x).program, {}) != key
    assert package_key(export_root(Scaled(), x).program, {"max_autotune": True}) != key


def test_the_package_key_of_a_program_read_back_from_the_cache_is_the_same(tmp_path):
    model = Scaled()
    compiled = export_root(model, (torch.randn(5, 3),))
    save_exported(compiled, tmp_path)
    loaded = load_exported(tmp_path, make_shell(model))
    assert package_key(loaded.program, {}) == package_key(compiled.program, {})


# -- AOTInductor packages (each build takes ~20 s: slow, few, sharing one cache) ------------


def _compiles(monkeypatch):
    """Count AOTInductor builds."""
    calls = []
    build = torch._inductor.aoti_compile_and_package

    def counting(*args, **kwargs):
        calls.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", counting)
    return calls


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """A package built cold into a cache, and one of the same architecture with other
    weights saved from that cache."""
    folder = tmp_path_factory.mktemp("aoti-cache")
    cache_dir = folder / "cache"
    torch.manual_seed(1)
    cold_model, warm_model = EnergyForces().eval(), EnergyForces().eval()
    with pytest.MonkeyPatch.context() as monkeypatch:
        builds = _compiles(monkeypatch)
        ts.save(
            compile_forces(cold_model), folder / "cold.pt2", format="aoti", options={"cache_dir": cache_dir}
        )
        assert len(builds) == 1
        ts.save(
            compile_forces(warm_model), folder / "warm.pt2", format="aoti", options={"cache_dir": cache_dir}
        )
        assert len(builds) == 1, "the second save compiled again"
        # no options: the package cache is the one the model was compiled with
        inherited = EnergyForces().eval()
        ts.save(compile_forces(inherited, cache_dir=cache_dir), folder / "inherited.pt2", format="aoti")
        assert len(builds) == 1, "a save after a compile with cache_dir did not use that cache"
    return cold_model, warm_model, folder, inherited


@pytest.mark.slow
def test_a_package_from_the_cache_runs_the_new_weights_like_a_cold_one(packages):
    cold_model, warm_model, folder, inherited_model = packages
    pos = torch.randn(11, 3)
    cold, warm = ts.load(folder / "cold.pt2"), ts.load(folder / "warm.pt2")
    assert isinstance(warm.module, AOTIModule)
    assert warm.plan is not None and warm.plan.root.outcome.n_verified >= 1
    assert_outputs_like(cold, cold_model, pos)
    assert_outputs_like(warm, warm_model, pos)
    assert_outputs_like(ts.load(folder / "inherited.pt2"), inherited_model, pos)
    assert not torch.allclose(warm(pos)[0], cold(pos)[0])


@pytest.mark.slow
def test_a_corrupt_cached_package_is_rebuilt_with_a_warning(packages, tmp_path, monkeypatch):
    _, warm_model, folder, _ = packages
    cache = CompileCache(tmp_path / "cache")
    for entry in CompileCache(folder / "cache").entries():
        if not (entry.folder / PACKAGE_FILE).exists():  # an export node's entry
            continue
        target = cache.folder(entry.key)
        target.mkdir(parents=True)
        for name in (PACKAGE_FILE, LAYOUT_FILE, "manifest.json"):
            (target / name).write_bytes((entry.folder / name).read_bytes())
        with open(target / PACKAGE_FILE, "r+b") as package:
            package.truncate(1000)
    builds = _compiles(monkeypatch)
    with pytest.warns(ts.TorchstitchWarning, match="damaged file 'package.pt2'"):
        ts.save(
            compile_forces(warm_model),
            tmp_path / "again.pt2",
            format="aoti",
            options={"cache_dir": cache.directory},
        )
    assert len(builds) == 1
    assert_outputs_like(ts.load(tmp_path / "again.pt2"), warm_model, torch.randn(6, 3))
    (entry,) = cache.entries()
    assert cache.lookup(entry.key) is not None  # the entry was replaced by a whole one
    with zipfile.ZipFile(entry.folder / PACKAGE_FILE) as archive:
        assert not any(
            "/extra/" in name for name in archive.namelist()
        )  # the plan is the caller's, not cached


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="AOTInductor packages are built for this host")
def test_a_package_from_the_cache_runs_in_cpp(packages, deploy_check, tmp_path):  # noqa: F811
    _, warm_model, folder, _ = packages
    pos = torch.randn(7, 3)
    outputs, _ = deploy_build.run(deploy_check, "aoti", folder / "warm.pt2", [pos], tmp_path)
    for got, want in zip(outputs, warm_model(pos), strict=True):
        torch.testing.assert_close(got, want)


class Shifted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.register_buffer("shift", torch.randn(4), persistent=False)

    def forward(self, x):
        return torch.tanh(self.lin(x)) + self.shift


def test_a_second_compile_of_the_architecture_loads_the_export_node_with_its_own_weights(tmp_path):
    x = torch.randn(5, 3)
    engine = ts.Engine(rules=[ts.Rule("export", path="")], cache_dir=tmp_path)
    first, second = Shifted(), Shifted()
    cold = engine.compile(first, example_inputs=(x,))
    assert cold.plan.root.outcome.cache.startswith("miss ")
    warm = engine.compile(second, example_inputs=(x,))
    assert warm.plan.root.outcome.cache == "hit " + cold.plan.root.outcome.cache.split()[1]
    assert isinstance(warm.module, ExportedModule)
    torch.testing.assert_close(warm.module(x), second(x))
    assert not torch.allclose(warm.module(x), first(x))
    assert warm.module.program.state_dict["lin.weight"] is second.lin.weight
    assert warm.module.unlifted.shift.data_ptr() == second.shift.data_ptr()
