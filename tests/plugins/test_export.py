"""The export plugin: the ``export`` strategy, dynamic shapes, specialisation, the ``export`` format."""

import pytest
import torch
from torch.export import Dim

import torchstitch as ts
from torchstitch.plugins.export import ExportedModule, custom_ops, package_metadata, whole_model_rules

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


@ts.compile_mode("trace")
class Leaf(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Leaf()
        self.b = Leaf()

    def forward(self, x):
        return self.b(self.a(x)) * 2


@ts.compile_mode("script")
class Branchy(torch.nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x
        return -x


class ShapeBranch(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] > 4:
            return x * 2
        return x - 1


class ValueBranch(torch.nn.Module):
    def forward(self, x):
        if torch.any(x > 0):
            return x
        return -x


def export_root(**options):
    return ts.Engine(
        rules=[ts.Rule("export", path="")], target="export", strategy_options={"export": options}
    )


def export_whole(**options):
    return ts.Engine(rules=whole_model_rules(), strategy_options={"export": options})


def test_target_export_sends_an_unclaimed_root_to_export_with_its_claims(watch):
    model = Model()
    check = watch(model)
    x = torch.randn(4, 3)
    result = ts.Engine(target="export").compile(model, example_inputs=(x,))
    root = result.plan[""]
    assert root.strategy == "export" and root.claim.kind is ts.ClaimKind.DEFAULT
    assert "nothing claims the root" in root.claim.reason
    assert result.plan["a"].strategy == "export"  # a user's claim: exported at its own node first
    assert isinstance(result.module, ExportedModule)
    torch.testing.assert_close(result.module(x), model(x))
    check()


class DataDependentGlue(torch.nn.Module):
    """A root nothing claims whose own code cannot export, above a claimed child."""

    def __init__(self):
        super().__init__()
        self.a = Leaf()

    def forward(self, x):
        y = self.a(x)
        return y if bool(y.sum() > 0) else -y


def test_a_root_that_cannot_export_falls_back_to_python_with_a_warning(watch):
    model = DataDependentGlue()
    check = watch(model)
    x = torch.randn(4, 3)
    with pytest.warns(ts.TorchstitchWarning, match="the root could not be compiled for target 'export'"):
        result = ts.Engine(target="export").compile(model, example_inputs=(x,))
    assert result.plan[""].claim is None and result.plan["a"].strategy == "export"
    assert isinstance(result.module.a, ExportedModule)
    for sign in (1.0, -1.0):
        torch.testing.assert_close(result.module(sign * x), model(sign * x))
    check()


def test_target_export_exports_trace_claims_per_node(watch):
    model = Model()
    check = watch(model)
    x = torch.randn(4, 3)
    result = ts.Engine(target="export", rules=[ts.Rule(None, path="")]).compile(model, example_inputs=(x,))
    assert result.plan["a"].strategy == "export"
    assert "retargeted to 'export'" in result.plan["a"].claim.reason
    assert isinstance(result.module.a, ExportedModule)
    assert isinstance(result.module.a.program, torch.export.ExportedProgram)
    assert result.plan["a"].outcome.n_verified == 1
    torch.testing.assert_close(result.module(x), model(x))
    check()


def test_export_root_inlines_exported_children_saves_and_loads(tmp_path, watch):
    model = Model()
    check = watch(model)
    x = torch.randn(4, 3)
    result = ts.Engine(rules=[ts.Rule("export", path="")], target="export").compile(
        model, example_inputs=(x,)
    )
    assert result.plan[""].strategy == "export" and result.plan["a"].strategy == "export"
    # the root is one graph of eager code: no nested unlifted graph module inside it
    targets = {str(n.target) for n in result.module.program.graph.nodes if n.op == "call_module"}
    assert targets == set()
    path = tmp_path / "model.pt2"
    ts.save(result, path)
    loaded = ts.load(path)
    assert loaded.format == "export"
    assert loaded.plan == result.plan
    assert isinstance(loaded.module, ExportedModule) and loaded.module.source is None
    torch.testing.assert_close(loaded(x), model(x))
    check()


def test_in_place_swaps_the_exported_children_in():
    model = Model()
    x = torch.randn(4, 3)
    expected = model(x)
    ts.Engine(rules=[ts.Rule("export", path="")], in_place=True, target="export").compile(
        model, example_inputs=(x,)
    )
    # children were exported on their own, then the root; in_place swaps them in
    assert isinstance(model.a, ExportedModule)
    torch.testing.assert_close(model(x), expected)


def test_named_dims_make_the_export_dynamic():
    model = Model()
    dims = {"atoms": {"x": 0}}
    engine = export_whole(dims=dims)
    # two sizes: also exercises the re-export comparison (the graphs agree)
    compiled = engine.compile(model, inputs={"": [(torch.randn(4, 3),), (torch.randn(6, 3),)]}).module
    for n in (2, 9):
        x = torch.randn(n, 3)
        torch.testing.assert_close(compiled(x), model(x))


def test_per_path_dynamic_shapes_beat_dims():
    model = Model()
    options = {"dims": {"atoms": {"x": 1}}, "dynamic_shapes": {"": {"x": {0: Dim("n", min=1)}}}}
    compiled = export_whole(**options).compile(model, example_inputs=(torch.randn(4, 3),)).module
    x = torch.randn(7, 3)
    torch.testing.assert_close(compiled(x), model(x))


def test_a_size_declared_static_but_given_two_sizes_is_a_specialisation_error(watch):
    model = Leaf()
    check = watch(model)
    inputs = {"": [(torch.randn(4, 3),), (torch.randn(6, 3),)]}
    engine = export_root(dynamic_shapes={"": {"x": {0: Dim.STATIC}}})
    with pytest.raises(ts.NodeCompileError, match=r"specialised a shape: x axis 0 .* to 4 .* has 6") as info:
        engine.compile(model, inputs=inputs)
    assert info.value.path == ""
    assert "'dims'" in str(info.value)
    check()


def test_size_guard_under_auto_dims_is_a_specialisation_error():
    inputs = {"": [(torch.randn(6, 3),), (torch.randn(3, 3),)]}
    engine = export_root(dynamic_shapes={"": {"x": {0: Dim.AUTO}}})
    with pytest.raises(ts.NodeCompileError, match=r"only valid in \[5, .*has 3") as info:
        engine.compile(ShapeBranch(), inputs=inputs)
    assert info.value.path == ""


def test_declared_dim_specialised_by_the_code_names_path_and_cure():
    with pytest.raises(ts.NodeCompileError, match=r"Constraints violated.*size-independent") as info:
        export_root(dims={"n": {"x": 0}}).compile(ShapeBranch(), example_inputs=(torch.randn(6, 3),))
    assert info.value.path == ""
    assert "min=5" in str(info.value)


def test_data_dependent_branch_fails_the_export_with_a_hint(watch):
    model = ValueBranch()
    check = watch(model)
    with pytest.raises(ts.NodeCompileError, match=r"GuardOnDataDependentSymNode.*torch\.cond") as info:
        export_root().compile(model, example_inputs=(torch.randn(3),))
    assert info.value.path == ""
    check()


def test_make_fx_failures_get_the_same_hints():
    with pytest.raises(ts.NodeCompileError, match=r"after make_fx failed: .*torch\.cond") as info:
        export_root(make_fx=True).compile(ValueBranch(), example_inputs=(torch.randn(3),))
    assert info.value.path == ""


class ScriptInsideExport(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = Branchy()

    def forward(self, x):
        return self.c(x)


def test_script_under_export_is_a_plan_error(watch):
    model = ScriptInsideExport()
    check = watch(model)
    with pytest.raises(ts.PlanError, match=r"claimed 'script'.*inside the 'export' region") as info:
        ts.plan(model, rules=[ts.Rule("export", path="")])
    assert info.value.path == "c"
    check()


def test_export_under_script_is_a_plan_error(watch):
    model = ScriptInsideExport()
    check = watch(model)
    rules = [ts.Rule("script", path=""), ts.Rule("export", path="c")]
    with pytest.raises(ts.PlanError, match=r"claimed 'export'.*inside the 'script' region") as info:
        ts.compile(model, example_inputs=(torch.randn(3),), rules=rules)
    assert info.value.path == "c"
    check()


def test_a_users_script_claim_is_exported_and_a_real_branch_fails_at_its_path(watch):
    class WithBranchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.leaf = Leaf()
            self.c = Branchy()

        def forward(self, x):
            return self.c(self.leaf(x))

    model = WithBranchy()
    check = watch(model)
    plan = ts.plan(model, target="export")
    assert plan["c"].strategy == "export"
    assert "'script' claim retargeted to 'export'" in plan["c"].claim.reason
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),), target="export")
    assert info.value.path == "c"
    message = str(info.value)
    assert "'c'" in message and "torch.cond" in message
    assert "[reason: data_dependent_branch" in message
    assert "if bool(x.sum() > 0):" in message  # the user's line of the branch
    check()


class Deep(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = Leaf()
        self.inner = torch.nn.Sequential(torch.nn.Linear(3, 3), Branchy())

    def forward(self, x):
        return self.inner(self.pre(x))


def test_an_export_failure_names_the_deepest_submodule_that_fails_on_its_own(watch, capfd):
    model = Deep()
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),), target="export", rules=whole_model_rules())
    message = str(info.value)
    assert info.value.path == "inner.1"
    assert "torch.export of <root> failed, and inner.1 (" in message
    assert "Branchy) is the deepest submodule whose own export fails" in message
    assert "[reason: data_dependent_branch]" in message
    assert "if bool(x.sum() > 0):" in message and "torch.cond" in message
    assert "torch.ops.aten" not in capfd.readouterr().err  # torch's partial graph: debug log only
    check()


class TwoBranches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first = Branchy()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 3), Branchy())

    def forward(self, x):
        return self.body(self.first(x))


def test_the_first_real_branch_in_compile_order_is_the_one_reported(watch):
    model = TwoBranches()
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),), target="export")
    assert info.value.path == "first"
    assert "'first'" in str(info.value)
    check()


def test_export_format_refuses_a_torchscript_root(tmp_path):
    scripted = ts.script(Branchy())
    with pytest.raises(ts.ArtifactError, match=r"format 'export' cannot save"):
        ts.save(scripted, tmp_path / "m.pt2", format="export")


@torch.library.custom_op("torchstitch_test::scale", mutates_args=())
def scale(x: torch.Tensor) -> torch.Tensor:
    return x * 3


@scale.register_fake
def _(x):
    return torch.empty_like(x)


class UsesCustomOp(torch.nn.Module):
    def forward(self, x):
        return scale(x) + 1


def test_custom_ops_are_found_for_the_package_metadata():
    compiled = export_root().compile(UsesCustomOp(), example_inputs=(torch.randn(3),)).module
    assert custom_ops(compiled.program) == {"torchstitch_test::scale": f"python:{__name__}"}
    meta = package_metadata(compiled, {})
    assert meta["torchstitch.inputs"] == '["x"]'
    assert '"torchstitch_test::scale"' in meta["torchstitch.custom_ops"]


# -- the NequIP-style reference model ---------------------------------------------

e3nn = pytest.importorskip("e3nn")


@pytest.fixture
def nequip():
    from reference_models import NequIPStyle, atoms

    return NequIPStyle(n_layers=1, channels=4), atoms


NEQUIP_DIMS = {"atoms": {"pos": 0, "species": 0}, "edges": {"edge_index": 1}}


def test_nequip_target_export_exports_the_root_and_inlines_e3nn(nequip):
    model, atoms = nequip
    plan = ts.plan(model, target="export")
    assert plan[""].strategy == "export"  # the user's 'script' claim, retargeted
    # e3nn's own 'script' claims are portable: the root's export inlines them
    assert plan["layers.0.tp"].claim is None and plan["layers.0.tp"].region == ""


@pytest.mark.slow
def test_nequip_exports_dynamic_from_two_input_sets_with_no_options(nequip, tmp_path, watch):
    """Issue 14's promise: the annotations the model carries, two sets of different sizes,
    nothing else; the artifact runs, like eager, on a size never seen at compile time."""
    model, atoms = nequip
    check = watch(model)
    result = ts.Engine(target="export").compile(model, example_inputs=[atoms(12), atoms(16, seed=2)])
    root = result.plan[""]
    assert root.strategy == "export" and root.outcome is not None
    dynamic = dict(root.outcome.notes)["dynamic"]
    assert "pos[0]" in dynamic and "edge_index[1]" in dynamic
    bigger = atoms(23, seed=1)
    torch.testing.assert_close(result.module(*bigger), model(*bigger))
    path = tmp_path / "nequip.pt2"
    result.save(str(path))
    torch.testing.assert_close(ts.load(path)(*bigger), model(*bigger))
    check()


def test_nequip_whole_model_export_is_dynamic_and_round_trips(nequip, tmp_path, watch):
    model, atoms = nequip
    check = watch(model)
    engine = ts.Engine(
        target="export", rules=whole_model_rules(), strategy_options={"export": {"dims": NEQUIP_DIMS}}
    )
    result = engine.compile(model, example_inputs=atoms(12))
    assert result.plan[""].strategy == "export"
    assert result.plan["layers.0.tp"].strategy is None  # traced as part of the root
    bigger = atoms(20, seed=1)
    torch.testing.assert_close(result.module(*bigger), model(*bigger))
    path = tmp_path / "nequip.pt2"
    result.save(str(path))
    loaded = ts.load(path)
    assert loaded.plan == result.plan
    torch.testing.assert_close(loaded(*bigger), model(*bigger))
    check()


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, pos, index):
        return self.lin(pos)[index]


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        (
            {"atoms": {"positions": 0}},
            r"names input 'positions', which the root's forward does not take \(its inputs: pos, index;",
        ),
        (
            {"atoms": {"pos": 2}},
            r"declares axis 2 of input 'pos' dynamic, but 'pos' is a tensor of shape \(5, 3\)",
        ),
    ],
)
def test_dims_that_do_not_fit_the_inputs_are_value_errors_naming_the_input(dims, message, watch):
    model = _TwoInputs()
    check = watch(model)
    with pytest.raises(ts.PlanError, match=message) as info:
        ts.compile(
            model,
            example_inputs=(torch.randn(5, 3), torch.tensor([0, 4])),
            rules=[ts.Rule("export", path="")],
            strategy_options={"export": {"dims": dims}},
        )
    assert isinstance(info.value, ValueError)
    assert info.value.path == "" and info.value.strategy == "export"
    check()
