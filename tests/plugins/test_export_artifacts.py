"""Exported models guard their inputs, in memory and loaded; the AOTI loader checks the package.

What an ``ExportedModule`` (from ``ts.compile`` or ``ts.load`` of format ``export``)
and an ``AOTIModule`` (format ``aoti``) do with a call that does not fit the export:
an ``InputSpecError`` naming the input, the dim, the size and the exported range.
"""

import json
import os
import zipfile

import pytest
import torch
from torch._export.wrappers import allow_in_pre_dispatch_graph
from torch.export import Dim

import torchstitch as ts
from torchstitch.plugins.export import AOTIModule, ExportedModule

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class Charges(torch.nn.Module):
    """One dict of per-atom tensors, as atomistic models take them, and a scalar."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)

    def forward(self, data, scale):
        return self.lin(data["pos"]).sum(-1) * scale + data["charge"]


def atoms(n, dtype=torch.float32):
    return {"pos": torch.randn(n, 3, dtype=dtype), "charge": torch.randn(n, dtype=dtype)}


def export_root(**options):
    return ts.Engine(rules=[ts.Rule("export", path="")], strategy_options={"export": options})


@pytest.fixture(scope="module")
def charges():
    """``Charges`` exported dynamic in the number of atoms, within [2, 64]."""
    torch.manual_seed(0)
    model = Charges()
    n = Dim("atoms", min=2, max=64)
    spec = {"": {"data": {"pos": {0: n}, "charge": {0: n}}, "scale": None}}
    compiled = export_root(dynamic_shapes=spec).compile(model, example_inputs=(atoms(6), torch.tensor(2.0)))
    return model, compiled.module


def call_error(module, *args, **kwargs) -> ts.InputSpecError:
    with pytest.raises(ts.InputSpecError) as caught:
        module(*args, **kwargs)
    return caught.value


def test_a_size_never_seen_runs_like_eager_and_by_keyword(charges):
    model, compiled = charges
    data, scale = atoms(9), torch.tensor(0.5)
    torch.testing.assert_close(compiled(data, scale), model(data, scale))
    torch.testing.assert_close(compiled(data=data, scale=scale), model(data, scale))


def test_a_size_out_of_range_names_input_dim_size_and_range(charges):
    _, compiled = charges
    error = call_error(compiled, atoms(70), torch.tensor(2.0))
    assert isinstance(error, ValueError)
    assert error.input == "data['pos']"
    assert "input data['pos'] dim 0 is 70, outside the range [2, 64] it was exported for" in str(error)
    assert "[at '<root>', strategy 'export']" in str(error)


def test_a_fixed_dim_says_what_it_was_fixed_to(charges):
    _, compiled = charges
    data = {"pos": torch.randn(6, 4), "charge": torch.randn(6)}
    error = call_error(compiled, data, torch.tensor(2.0))
    assert "input data['pos'] dim 1 is 4, but the export fixed it to 3" in str(error)


def test_sizes_the_export_made_one_must_agree(charges):
    _, compiled = charges
    data = {"pos": torch.randn(6, 3), "charge": torch.randn(7)}
    error = call_error(compiled, data, torch.tensor(2.0))
    assert error.input == "data['charge']"
    assert "data['charge'] dim 0 is 7, but data['pos'] dim 0 is 6" in str(error)


def test_dtype_device_and_rank_are_checked(charges):
    _, compiled = charges
    error = call_error(compiled, atoms(6, torch.float64), torch.tensor(2.0))
    assert "input data['pos'] is float64, but the export takes float32" in str(error)
    on_meta = {"pos": torch.randn(6, 3, device="meta"), "charge": torch.randn(6, device="meta")}
    error = call_error(compiled, on_meta, torch.tensor(2.0))
    assert "input data['pos'] is on meta, but the export runs on cpu" in str(error)
    error = call_error(compiled, atoms(6), torch.ones(1))
    assert "input scale has 1 dims (shape [1]), but the export takes 0" in str(error)


def test_structure_and_types_are_type_errors_naming_the_input(charges):
    _, compiled = charges
    error = call_error(compiled, {"pos": torch.randn(6, 3)}, torch.tensor(2.0))
    assert isinstance(error, TypeError)
    assert error.input == "data"
    assert (
        "input data is a dict with keys ['pos'], but the export takes a dict with keys ['charge', 'pos']"
        in str(error)
    )
    error = call_error(compiled, {"charge": torch.randn(6), "pos": torch.randn(6, 3)}, torch.tensor(2.0))
    assert isinstance(error, TypeError)
    assert error.input == "data"
    assert (
        "input data has the keys the export took, in another order: ['charge', 'pos']; "
        "the export fixed their order as ['pos', 'charge']"
    ) in str(error)
    error = call_error(compiled, atoms(6))
    assert "forward(data, scale) was exported with 2 positional inputs, got 1" in str(error)
    error = call_error(compiled, atoms(6), 2.0)
    assert "input scale is a float, but the export takes a tensor" in str(error)


class Prefix(torch.nn.Module):
    def forward(self, x, y):
        return x.sum(-1) + y[: x.shape[0]].sum()


def test_a_relation_torch_guards_in_the_graph_is_an_input_spec_error():
    dims = {"": {"x": {0: Dim("n")}, "y": {0: Dim("m")}}}
    compiled = export_root(dynamic_shapes=dims).compile(
        Prefix(), example_inputs=(torch.randn(6, 3), torch.randn(8))
    )
    error = call_error(compiled.module, torch.randn(6, 3), torch.randn(2))
    assert "x.size()[0] <= y.size()[0]" in str(error)
    assert isinstance(error.__cause__, AssertionError)


class Pointwise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.lin(torch.sin(x) * x)


def test_a_loaded_export_guards_itself_with_the_users_argument_names(tmp_path):
    model = Pointwise()
    options = {"dims": {"atoms": {"x": 0}}, "make_fx": True}  # make_fx graphs call it arg0_1
    compiled = export_root(**options).compile(model, example_inputs=(torch.randn(5, 3),))
    ts.save(compiled, tmp_path / "pointwise.pt2", format="export")
    loaded = ts.load(tmp_path / "pointwise.pt2").module
    assert isinstance(loaded, ExportedModule)
    x = torch.randn(11, 3)
    torch.testing.assert_close(loaded(x), model(x))
    for module in (compiled.module, loaded):
        error = call_error(module, torch.randn(5, 4))
        assert error.input == "x"
        assert "input x dim 1 is 4, but the export fixed it to 3" in str(error)


class Flagged(torch.nn.Module):
    """A Python bool argument, as LAMMPS_MACE's ``compute_virials``: the export fixes it."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)

    def forward(self, x, double: bool = False):
        y = self.lin(x)
        return y * 2 if double else y


def test_a_constant_argument_is_guarded_with_the_tensors():
    model = Flagged()
    compiled = export_root(dims={"atoms": {"x": 0}}).compile(model, example_inputs=(torch.randn(5, 3), True))
    x = torch.randn(8, 3)
    torch.testing.assert_close(compiled.module(x, True), model(x, True))
    error = call_error(compiled.module, x, False)
    assert error.input == "double"
    assert "input double is False, but the export fixed it to True" in str(error)
    error = call_error(compiled.module, torch.randn(8, 4), True)
    assert "input x dim 1 is 4, but the export fixed it to 3" in str(error)


# -- the fast path of the per-call check ----------------------------------------------


def test_a_call_that_fits_takes_the_fast_path_and_gives_the_same_leaves(charges, monkeypatch):
    model, compiled = charges
    spec = compiled.input_spec
    data, scale = atoms(9), torch.tensor(0.5)
    _, _, full = spec.check((), {"data": data, "scale": scale})  # by name: the full check binds them
    from torchstitch.plugins.export.guards import InputSpec

    def no_full_check(*args, **kwargs):
        raise AssertionError("the full check ran for a call that fits")

    monkeypatch.setattr(InputSpec, "_bind", no_full_check)
    args, kwargs, fast = spec.check((data, scale), {})
    assert args == (data, scale) and kwargs == {}
    assert len(fast) == len(full) and all(a is b for a, b in zip(fast, full))
    torch.testing.assert_close(compiled(data, scale), model(data, scale))


@pytest.mark.parametrize(
    "call, message",
    [
        ((atoms(70), torch.tensor(2.0)), "input data['pos'] dim 0 is 70, outside the range [2, 64]"),
        ((atoms(1), torch.tensor(2.0)), None),  # below torch's own lower bound: it runs
        (
            ({"pos": torch.randn(6, 3), "charge": torch.randn(7)}, torch.tensor(2.0)),
            "data['charge'] dim 0 is 7",
        ),
        (
            ({"charge": torch.randn(6), "pos": torch.randn(6, 3)}, torch.tensor(2.0)),
            "input data has the keys the export took, in another order",
        ),
        (({"pos": torch.randn(6, 3)}, torch.tensor(2.0)), "input data is a dict with keys ['pos']"),
        ((atoms(6, torch.float64), torch.tensor(2.0)), "input data['pos'] is float64"),
        ((atoms(6), torch.ones(1)), "input scale has 1 dims"),
        ((atoms(6), 2.0), "input scale is a float"),
        (([atoms(6)["pos"], atoms(6)["charge"]], torch.tensor(2.0)), "input data is a list of 2"),
    ],
    ids=["range", "size-1", "one-size", "key-order", "keys", "dtype", "rank", "type", "structure"],
)
def test_the_fast_path_lets_only_fitting_calls_through(charges, call, message):
    """Every misfit falls through to the full check, which names it (``None``: the call fits)."""
    _, compiled = charges
    flat = compiled.input_spec._fast.flat_if_fits(call, {})
    if message is None:
        assert flat is not None
        compiled(*call)
        return
    assert flat is None
    assert message in str(call_error(compiled, *call))


# -- an operator torch.export.save cannot serialise ---------------------------------


class Double(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2

    @classmethod
    @allow_in_pre_dispatch_graph  # export records it as a flat_apply call, as transformers' masks are
    def apply(cls, *args, **kwargs):
        return super().apply(*args, **kwargs)


class UsesFlatApply(torch.nn.Module):
    def forward(self, x):
        return Double.apply(x) + 1


def test_an_operator_torch_cannot_serialise_is_an_artifact_error_pointing_to_aoti(tmp_path):
    compiled = export_root().compile(UsesFlatApply(), example_inputs=(torch.randn(4),))
    flat_apply = torch.ops.higher_order.flat_apply
    assert any(node.target is flat_apply for node in compiled.module.program.graph.nodes)
    path = tmp_path / "model.pt2"
    with pytest.raises(ts.ArtifactError) as caught:
        ts.save(compiled, path, format="export")
    message = str(caught.value)
    assert "cannot serialise the operator higher_order.flat_apply" in message
    assert "Format 'aoti' may still work" in message
    assert type(caught.value.__cause__).__name__ == "SerializeError"
    assert os.listdir(tmp_path) == []  # neither the file nor a partial one


# -- AOTInductor packages (one build for the module: slow) --------------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    torch.manual_seed(0)
    model = Pointwise()
    spec = {"": {"x": {0: Dim("n", min=2, max=64)}}}
    compiled = export_root(dynamic_shapes=spec).compile(model, example_inputs=(torch.randn(6, 3),))
    path = tmp_path_factory.mktemp("aoti") / "pointwise.pt2"
    ts.save(compiled, path, format="aoti")
    return model, path


def edited_copy(path, directory, **changes):
    """A copy of the package at ``path`` whose metadata has ``changes`` (keys with ``.`` for ``__``)."""
    copy = directory / "edited.pt2"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if "/data/aotinductor/" in item.filename and item.filename.endswith("_metadata.json"):
                metadata = json.loads(data)
                metadata.update({key.replace("__", "."): value for key, value in changes.items()})
                data = json.dumps(metadata).encode()
            target.writestr(item, data)
    return copy


@pytest.mark.slow
def test_aoti_package_checks_its_inputs(package):
    model, path = package
    loaded = ts.load(path).module
    assert isinstance(loaded, AOTIModule)
    assert list(json.loads(loaded.metadata["torchstitch.input_spec"])["ranges"].values()) == [[2, 64]]
    x = torch.randn(9, 3)
    torch.testing.assert_close(loaded(x), model(x))
    error = call_error(loaded, torch.randn(70, 3))  # the bare package runs it, past its bound
    assert "input x dim 0 is 70, outside the range [2, 64] it was exported for" in str(error)
    error = call_error(loaded, torch.randn(9, 3, dtype=torch.float64))
    assert "input x is float64, but the export takes float32" in str(error)


@pytest.mark.slow
def test_aoti_package_makes_inputs_contiguous(package):
    model, path = package
    loaded = ts.load(path).module
    x = torch.randn(3, 9).t()
    assert not x.is_contiguous()
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.slow
def test_aoti_package_of_another_torch_is_refused_naming_both_versions(package, tmp_path):
    _, path = package
    edited = edited_copy(path, tmp_path, torchstitch__torch_version="2.0.0")
    with pytest.raises(ts.ArtifactError) as caught:
        ts.load(edited)
    assert f"built with torch 2.0.0, and this is torch {torch.__version__}" in str(caught.value)
    assert "not an artifact any format can read" not in str(caught.value)  # its own format's error


@pytest.mark.slow
def test_aoti_package_loads_its_libraries_first_and_names_a_missing_one(package, tmp_path, monkeypatch):
    _, path = package
    missing = str(tmp_path / "libmissing_ops.so")
    edited = edited_copy(
        path,
        tmp_path,
        torchstitch__libraries=json.dumps([missing]),
        torchstitch__custom_ops=json.dumps({"my_ops::scale": missing}),
    )
    with pytest.raises(ts.ArtifactError) as caught:
        ts.load(edited)
    assert f"custom operators ['my_ops::scale'] from the library {missing!r}" in str(caught.value)

    library = tmp_path / "libmy_ops.so"
    library.write_bytes(b"")
    edited = edited_copy(path, tmp_path, torchstitch__libraries=json.dumps([str(library)]))
    calls = []
    load_package = torch._inductor.aoti_load_package
    monkeypatch.setattr(torch.ops, "load_library", lambda name: calls.append(("library", name)))
    monkeypatch.setattr(
        torch._inductor,
        "aoti_load_package",
        lambda name: calls.append(("package", name)) or load_package(name),
    )
    ts.load(edited)
    assert calls == [("library", str(library)), ("package", str(edited))]


@pytest.mark.parametrize(
    "outputs",
    [{"energy": 1, "forces": 2}, (1, 2), [1, 2], {"energy": (1, 2), "forces": 3}, 1, {"energy": None}],
    ids=["dict", "tuple", "list", "nested", "one", "dict-with-none"],
)
def test_a_package_gives_its_outputs_back_in_the_models_structure(outputs):
    from torch.utils import _pytree as pytree

    from torchstitch.plugins.export.module import _output_builder

    flat, spec = pytree.tree_flatten(outputs)
    assert _output_builder(spec)(flat) == outputs
