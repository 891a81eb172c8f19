"""The export strategy's dims: inferred from the calls, declared by path with bounds; the way it traces."""

import logging
import warnings

import pytest
import torch
from torch.export import Dim

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class Atoms(torch.nn.Module):
    """A Linear over atoms plus a per-species embedding: pos (n, 3), species (n,)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.emb = torch.nn.Embedding(5, 4)

    def forward(self, pos, species):
        return self.lin(pos) + self.emb(species)


def atoms(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=generator), torch.randint(0, 5, (n,), generator=generator)


class DictAtoms(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Atoms()

    def forward(self, data):
        return self.inner(data["pos"], data["species"]).sum(0)


class StarAtoms(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Atoms()

    def forward(self, *args):
        return self.inner(*args)


def export_dims(model, sets, **options):
    """Compile ``model`` for export on the root input ``sets`` (the first is ``example_inputs``)."""
    engine = ts.Engine(target="export", strategy_options={"export": options})
    return engine.compile(model, example_inputs=sets[0], inputs={"": list(sets)})


def test_sizes_that_differ_become_dynamic_named_in_the_plan(watch):
    model = Atoms()
    check = watch(model)
    result = export_dims(model, [atoms(6), atoms(9, seed=1)])
    assert result.plan[""].strategy == "export"
    assert dict(result.plan[""].outcome.notes) == {"dynamic": "s0 = pos[0] = species[0]"}
    assert "dynamic: s0 = pos[0] = species[0]" in result.plan.render()
    unseen = atoms(13, seed=2)
    torch.testing.assert_close(result.module(*unseen), model(*unseen))
    check()


@ts.compile_mode("trace")
class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(self.lin(x))


class Layered(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.atoms = Atoms()
        self.layer = Layer()

    def forward(self, pos, species):
        return self.layer(self.atoms(pos, species))


def test_every_exported_node_gets_its_own_dims():
    model = Layered()
    sets = [atoms(6), atoms(9, seed=1)]
    layer_sets = [(model.atoms(*s).detach(),) for s in sets]
    result = ts.Engine(target="export", rules=[ts.Rule(None, path="")]).compile(
        model, example_inputs=sets[0], inputs={"": sets, "layer": layer_sets}
    )
    assert result.plan["layer"].strategy == "export"  # retargeted from 'trace'
    assert dict(result.plan["layer"].outcome.notes) == {"dynamic": "s0 = x[0]"}
    unseen = atoms(13, seed=2)
    torch.testing.assert_close(result.module.layer(model.atoms(*unseen)), model.layer(model.atoms(*unseen)))


def test_tensors_inside_a_dict_argument_become_dynamic(watch):
    model = DictAtoms()
    check = watch(model)
    sets = [({"pos": p, "species": s},) for p, s in (atoms(6), atoms(9, seed=1))]
    result = export_dims(model, sets)
    assert dict(result.plan[""].outcome.notes) == {"dynamic": "s0 = data['pos'][0] = data['species'][0]"}
    pos, species = atoms(13, seed=2)
    data = {"pos": pos, "species": species}
    torch.testing.assert_close(result.module(data), model(data))
    check()


def test_dims_reach_into_a_dict_and_take_bounds():
    model = DictAtoms()
    pos, species = atoms(6)
    dims = {Dim("atoms", max=64): {"data['pos']": 0, "data['species']": 0}}
    engine = ts.Engine(target="export", strategy_options={"export": {"dims": dims}})
    result = engine.compile(model, example_inputs=({"pos": pos, "species": species},))
    assert dict(result.plan[""].outcome.notes) == {
        "dynamic": "atoms = data['pos'][0] = data['species'][0] [0, 64]"
    }
    pos, species = atoms(13, seed=2)
    data = {"pos": pos, "species": species}
    torch.testing.assert_close(result.module(data), model(data))
    too_many = dict(zip(("pos", "species"), atoms(65)))
    with pytest.raises(Exception, match="64"):
        result.module(too_many)


def test_a_dict_argument_named_whole_points_to_its_tensors(watch):
    model = DictAtoms()
    check = watch(model)
    pos, species = atoms(6)
    with pytest.raises(ts.PlanError, match=r"'data', which holds several inputs: .*data\['pos'\]") as info:
        ts.compile(
            model,
            example_inputs=({"pos": pos, "species": species},),
            target="export",
            strategy_options={"export": {"dims": {"atoms": {"data": 0}}}},
        )
    assert info.value.path == ""
    check()


def test_dims_of_a_star_args_forward_by_position():
    model = StarAtoms()
    dims = {"atoms": {"args[0]": 0, "args[1]": 0}}
    engine = ts.Engine(target="export", strategy_options={"export": {"dims": dims}})
    result = engine.compile(model, example_inputs=atoms(6))
    assert dict(result.plan[""].outcome.notes) == {"dynamic": "atoms = args[0][0] = args[1][0]"}
    unseen = atoms(13, seed=2)
    torch.testing.assert_close(result.module(*unseen), model(*unseen))


def test_dims_by_name_for_a_star_args_forward_are_refused_not_ignored(watch):
    model = StarAtoms()
    check = watch(model)
    with pytest.raises(ts.PlanError, match=r"names input 'pos'.*its inputs: args\[0\], args\[1\]") as info:
        ts.compile(
            model,
            example_inputs=atoms(6),
            target="export",
            strategy_options={"export": {"dims": {"atoms": {"pos": 0}}}},
        )
    assert info.value.path == ""
    check()


def test_a_declared_dim_with_one_size_in_every_set_is_an_error(watch):
    model = Atoms()
    check = watch(model)
    pos, species = atoms(6)
    sets = [(pos, species), (pos + 1, species)]
    with pytest.raises(
        ts.NodeCompileError, match=r"pos\[0\] dynamic, but it is 6 in every one of the 2"
    ) as info:
        export_dims(model, sets, dims={"atoms": {"pos": 0, "species": 0}})
    assert info.value.path == ""
    assert "different sizes" in str(info.value)
    check()


def _export_warnings(model, sets):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export_dims(model, sets)
    return result, [str(w.message) for w in caught if issubclass(w.category, ts.TorchstitchWarning)]


def test_a_size_like_a_fixed_axis_is_avoided_by_exporting_on_another_set():
    model = Atoms()
    result, warned = _export_warnings(model, [atoms(3), atoms(7, seed=1)])
    assert warned == []
    unseen = atoms(13, seed=2)
    torch.testing.assert_close(result.module(*unseen), model(*unseen))


def test_sizes_torch_specialises_are_warned_about():
    model = Atoms()
    result, warned = _export_warnings(model, [atoms(3), atoms(1, seed=1)])
    assert len(warned) == 1
    assert "pos[0] has size 3, like the fixed axis pos[1]" in warned[0]
    assert "pos[0] has size 1, which torch specialises (tracing input 1)" in warned[0]
    assert ">= 2" in warned[0]
    unseen = atoms(13, seed=2)
    torch.testing.assert_close(result.module(*unseen), model(*unseen))


class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Layer()
        self.b = Layer()

    def forward(self, x):
        return self.b(self.a(x))


def test_a_static_compile_from_one_set_warns_once_how_to_make_it_dynamic():
    with pytest.warns(ts.TorchstitchWarning) as caught:
        ts.compile(Pair(), example_inputs=(torch.randn(4, 4),), target="export")
    static = [str(w.message) for w in caught if "only accepts these sizes" in str(w.message)]
    assert len(static) == 1  # two exported nodes, one warning per compile call
    assert "(4, 4)" in static[0] and "list of input sets" in static[0] and "'dims'" in static[0]


def test_a_dynamic_compile_does_not_warn_it_is_static():
    _, warned = _export_warnings(Atoms(), [atoms(6), atoms(9, seed=1)])
    assert warned == []


class Inner(torch.nn.Module):
    def forward(self, x):
        return torch.sin(x) * 2


class HoldsScript(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.scripted = torch.jit.script(Inner())

    def forward(self, x):
        return self.scripted(self.lin(x))


def test_a_torchscript_child_is_exported_through_make_fx(watch):
    model = HoldsScript()
    check = watch(model)
    result = export_dims(model, [(torch.randn(6, 3),), (torch.randn(9, 3),)])
    assert dict(result.plan[""].outcome.notes) == {"dynamic": "s0 = x[0]", "via": "make_fx"}
    x = torch.randn(13, 3)
    torch.testing.assert_close(result.module(x), model(x))
    check()


def test_make_fx_forbidden_with_a_torchscript_child_says_why(watch):
    model = HoldsScript()
    check = watch(model)
    with pytest.raises(
        ts.NodeCompileError, match=r"TorchScript modules \(scripted\).*'make_fx': False"
    ) as info:
        export_dims(model, [(torch.randn(6, 3),)], make_fx=False)
    assert info.value.path == ""
    check()


class Noisy(torch.nn.Module):
    def forward(self, x):
        if torch.compiler.is_exporting():  # the eager run that records inputs must pass
            raise RuntimeError("cannot trace this\n" + "graph line\n" * 5000)
        return x


def test_torchs_long_messages_go_to_the_debug_log(caplog):
    with caplog.at_level(logging.DEBUG, logger="torchstitch.plugins.export"):
        with pytest.raises(ts.NodeCompileError) as info:
            export_dims(Noisy(), [(torch.randn(3),)])
    message = str(info.value)
    assert "RuntimeError: cannot trace this" in message and len(message) < 1000
    assert "debug log" in message
    assert "graph line\n" * 100 in caplog.text
    assert isinstance(info.value.__cause__, RuntimeError)


class SizeBranch(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] > 4:
            return x * 2
        return x - 1


class Deep(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 3), SizeBranch())

    def forward(self, x):
        return self.body(x)


def test_a_specialised_dim_names_the_submodule_and_its_line():
    with pytest.raises(ts.NodeCompileError, match=r"Constraints violated") as info:
        ts.compile(
            Deep(),
            example_inputs=(torch.randn(6, 3),),
            target="export",
            strategy_options={"export": {"dims": {"n": {"x": 0}}}},
        )
    message = str(info.value)
    assert "The size was fixed by body.1 (test_export_dims.py:" in message
    assert "if x.shape[0] > 4:" in message


def test_a_declared_dim_of_size_one_says_torch_specialises_it():
    with pytest.raises(ts.NodeCompileError, match=r"torch specialises sizes 0 and 1") as info:
        ts.compile(
            Atoms(),
            example_inputs=atoms(1),
            target="export",
            strategy_options={"export": {"dims": {"atoms": {"pos": 0, "species": 0}}}},
        )
    assert info.value.path == ""
