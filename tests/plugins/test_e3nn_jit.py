"""torchstitch.plugins.e3nn.jit: the drop-in for e3nn.util.jit.

The first tests port e3nn's own tests/util/test_jit.py to the compat module
(tighter: exact error types, paths, and the model left as it was); the rest
check what the compat module promises beyond e3nn: the same signatures, no
attribute written on the caller's modules, atomic in-place compilation.
"""

import inspect
import warnings

import pytest
import torch

import torchstitch as ts

pytest.importorskip("e3nn")
e3nn_jit = pytest.importorskip("e3nn.util.jit")
import e3nn  # noqa: E402
import e3nn.nn  # noqa: E402
import e3nn.o3  # noqa: E402
from e3nn.o3 import Irreps, Linear  # noqa: E402
from e3nn.util.test import assert_equivariant  # noqa: E402

from torchstitch.plugins.e3nn import jit  # noqa: E402

pytestmark = [
    pytest.mark.e3nn,
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
]


# ---------------------------------------------------------------------------
# ports of e3nn's tests/util/test_jit.py
# ---------------------------------------------------------------------------


def test_submod_tracing_needs_inputs(watch):
    """e3nn's test_submod_tracing: a traced child without usable tracing inputs fails."""

    @jit.compile_mode("trace")
    class BadTrace(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] == 7:
                return x.new_ones(8)
            return x

        # misnamed on purpose (as in e3nn's test): not the _make_tracing_inputs hook
        def make_tracing_input(self):
            return {"forward": torch.randn(8, 3)}

    class ParentMod(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.child = BadTrace()

        def forward(self, x):
            return torch.as_tensor(0.5585) * self.child(x)

    parent = ParentMod()
    check = watch(parent)
    with pytest.raises(ts.TracingInputsError) as info:
        jit.script(parent)
    assert info.value.path == "child"
    assert info.value.strategy == "trace"
    assert "_make_tracing_inputs" in str(info.value)
    check()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_submod_tracing_actually_traces(watch):
    """Tracing really happens: a shape-dependent branch is frozen, and the engine's check
    on a second tracing input that takes the other branch catches it."""

    @jit.compile_mode("trace")
    class BadTrace(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] == 7:
                return x.new_ones(8)
            return x

        def _make_tracing_inputs(self, n):
            return [{"forward": (torch.randn(8, 3),)}, {"forward": (torch.randn(7, 3),)}]

    class ParentMod(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.child = BadTrace()

        def forward(self, x):
            return torch.as_tensor(0.5585) * self.child(x)

    parent = ParentMod()
    check = watch(parent)
    with pytest.raises(ts.VerificationError) as info:
        jit.script(parent)
    assert info.value.path == "child"
    assert "tracing input 1" in str(info.value)
    check()


def test_submod_scripting():
    """e3nn's test_submod_scripting: a scripted child keeps its branch inside a traced parent."""

    @jit.compile_mode("script")
    class ScriptSubmod(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] == 7:
                return x.new_zeros(8)
            return x

    class ParentMod(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.child = ScriptSubmod()

        def forward(self, x):
            return self.child(x)

    parent = ParentMod()
    assert parent(torch.randn(7, 4)).shape == (8,)

    parent_trace = jit.trace_module(parent, inputs={"forward": (torch.randn(7, 4),)})
    assert isinstance(parent_trace, torch.jit.ScriptModule)
    assert isinstance(parent_trace.child, torch.jit.ScriptModule)
    # the behaviour it was traced for
    assert parent_trace(torch.randn(7, 4)).shape == (8,)
    # the conditional, which was scripted rather than frozen by the trace
    x = torch.randn(5, 7)
    assert torch.allclose(parent(x), x)
    assert torch.allclose(parent_trace(x), x)


def test_compilation(watch):
    """e3nn's test_compilation: a module torch.jit.script rejects compiles once its
    child (which calls super().forward) is traced."""

    class Supermod(torch.nn.Module):
        def forward(self, x):
            return x * 2.0

    @jit.compile_mode("trace")
    class ChildMod(Supermod):
        def forward(self, x):
            return super().forward(x) * 3.0

        def _make_tracing_inputs(self, n: int):
            return [{"forward": (torch.randn(2, 3),)} for _ in range(n)]

    class ContainerMod(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.submod = ChildMod()
            self.alpha = torch.randn(1).squeeze()

        def forward(self, x):
            return self.submod(x) + self.alpha * self.submod(x)

    mod = ContainerMod()
    with pytest.raises((RuntimeError, torch.jit.Error)), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(mod)

    check = watch(mod)
    mod_script = jit.script(mod, in_place=False)
    check()
    assert isinstance(mod_script, torch.jit.ScriptModule)
    x = torch.randn(3, 2)
    assert torch.allclose(mod(x), mod_script(x))

    # the e3nn default, in_place=True, puts the traced child into the caller's module
    mod_script = jit.script(mod)
    assert isinstance(mod.submod, torch.jit.ScriptModule)
    assert torch.allclose(mod(x), mod_script(x))


def test_equivariant():
    """e3nn's test_equivariant: a compiled Linear is still equivariant."""
    irreps_in = Irreps("1e + 2e + 3x3o")
    irreps_out = Irreps("1e + 2e + 3x3o")
    mod = Linear(irreps_in, irreps_out)
    mod_script = jit.compile(mod)
    assert isinstance(mod_script, torch.jit.ScriptModule)
    assert_equivariant(mod_script, irreps_in=irreps_in, irreps_out=irreps_out)
    x = irreps_in.randn(5, -1)
    assert torch.allclose(mod_script(x), mod(x))


def test_unsupported(watch):
    """e3nn's test_unsupported: an unsupported child inside a scripted parent is a
    NotImplementedError, raised before anything compiled."""

    @jit.compile_mode("unsupported")
    class ChildMod(torch.nn.Module):
        pass

    class Supermod(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.child = ChildMod()

    mod = Supermod()
    check = watch(mod)
    with pytest.raises(NotImplementedError) as info:
        jit.script(mod)
    assert isinstance(info.value, ts.UnsupportedModuleError)
    assert info.value.path == "child"
    check()


# ---------------------------------------------------------------------------
# the compat API itself
# ---------------------------------------------------------------------------

_SAME_API = ["compile_mode", "get_compile_mode", "compile", "script", "trace", "trace_module"]
_SAME_API += ["get_tracing_inputs"]
if hasattr(e3nn_jit, "disable_e3nn_codegen"):
    _SAME_API.append("disable_e3nn_codegen")


#: keyword-only arguments of ours that e3nn lacks (torchstitch's compile cache)
OUR_KEYWORDS = {"cache_dir"}


@pytest.mark.parametrize("name", _SAME_API)
def test_same_signature_as_e3nn(name):
    ours = [
        (p.name, p.kind, p.default)
        for p in inspect.signature(getattr(jit, name)).parameters.values()
        if p.name not in OUR_KEYWORDS
    ]
    theirs = [
        (p.name, p.kind, p.default) for p in inspect.signature(getattr(e3nn_jit, name)).parameters.values()
    ]
    # e3nn < 0.6 lacks compile(recurse=...): ours is the newest API, theirs must be its prefix
    assert ours[: len(theirs)] == theirs
    if e3nn.__version__.startswith("0.6"):
        assert ours == theirs
    assert name in jit.__all__
    assert getattr(jit, name).__doc__


def test_compile_mode_validation():
    with pytest.raises(ValueError, match="Invalid compile mode 'bogus'"):
        jit.compile_mode("bogus")
    with pytest.raises(ValueError, match="Invalid compile mode 3"):
        jit.compile_mode(3)
    with pytest.raises(TypeError, match="subclasses of torch.nn.Module"):
        jit.compile_mode("script")(object)


def test_get_compile_mode_sources():
    class Plain(torch.nn.Module):
        pass

    @jit.compile_mode("trace")
    class Ours(torch.nn.Module):
        pass

    @e3nn_jit.compile_mode("script")
    class Theirs(torch.nn.Module):
        pass

    @jit.compile_mode("trace")
    class Both(Theirs):
        pass

    @jit.compile_mode(None)
    class Cancelled(Theirs):
        pass

    graph = torch.fx.symbolic_trace(torch.nn.ReLU())

    assert jit.get_compile_mode(Plain()) is None
    assert jit.get_compile_mode(Ours()) == "trace"
    assert jit.get_compile_mode(Theirs()) == "script"
    assert jit.get_compile_mode(Both()) == "trace"  # torchstitch's beats e3nn's
    assert jit.get_compile_mode(Cancelled()) == "script"  # None is "unset": e3nn's still counts
    assert jit.get_compile_mode(graph) == "script"
    assert e3nn_jit.get_compile_mode(Ours()) is None  # e3nn's own reader does not see ours

    instance = Theirs()
    ts.set_compile_mode(instance, "trace")
    assert jit.get_compile_mode(instance) == "trace"
    instance = Theirs()
    instance.__dict__["__e3nn_compile_mode__"] = None  # e3nn: an instance's None cancels the class's
    assert jit.get_compile_mode(instance) is None


def test_compile_of_unsupported_root_raises(watch):
    bn = e3nn.nn.BatchNorm("2x0e + 1x1o")
    check = watch(bn)
    with pytest.raises(NotImplementedError, match="BatchNorm does not support TorchScript") as info:
        jit.compile(bn)
    assert isinstance(info.value, ts.UnsupportedModuleError)
    assert info.value.path == ""
    assert info.value.claimant == "plugin e3nn"
    check()

    @jit.compile_mode("unsupported")
    class Ours(torch.nn.Module):
        pass

    with pytest.raises(ts.UnsupportedModuleError, match="Ours does not support") as info:
        jit.compile(Ours())
    assert info.value.claimant.startswith("@compile_mode on ")


def test_unsupported_outside_compiled_regions_stays_in_python():
    """Unlike e3nn (which recurses into every child and raises), an unsupported module
    that no compiled module contains is left in Python; its siblings still compile."""

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = e3nn.nn.BatchNorm("2x0e")
            self.lin = Linear("2x0e", "2x0e")

        def forward(self, x):
            return self.lin(self.bn(x))

    model = Model()
    out = jit.compile(model)
    assert out is model
    assert isinstance(model.lin, torch.jit.ScriptModule)
    assert isinstance(model.bn, e3nn.nn.BatchNorm)


def test_compile_without_modes_returns_the_module_unchanged(watch):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU())
    check = watch(model)
    assert jit.compile(model) is model
    check()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_compile_recurse_false_compiles_only_the_root():
    @jit.compile_mode("trace")
    class Frozen(torch.nn.Module):
        def forward(self, x):
            if bool(x.sum() > 0):
                return x * 2.0
            return x - 1.0

        def _make_tracing_inputs(self, n):
            return [{"forward": (torch.ones(2, 3),)}]

    @jit.compile_mode("script")
    class Root(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.child = Frozen()

        def forward(self, x):
            return self.child(x) + 1.0

    model = Root()
    negative = -torch.ones(2, 3)
    # recurse=False: the child is scripted with its parent, so its branch survives
    shallow = jit.compile(model, recurse=False, in_place=False)
    assert torch.equal(shallow(negative), model(negative))
    # recurse=True: the child is traced on its own inputs first, its branch frozen
    deep = jit.compile(model, in_place=False)
    assert torch.equal(deep(negative), negative * 2.0 + 1.0)


def test_in_place_failure_leaves_model_unchanged(watch):
    """e3nn's compile leaves a half-compiled model when a later child fails; ours does not."""

    @jit.compile_mode("script")
    class NotScriptable(torch.nn.Module):
        def forward(self, x):
            return x.numpy()  # TorchScript cannot compile this

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = Linear("2x0e", "2x0e")
            self.second = NotScriptable()

        def forward(self, x):
            return self.second(self.first(x))

    model = Model()
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        jit.compile(model)
    assert info.value.path == "second"
    assert isinstance(model.first, Linear)
    check()


def test_script_and_trace_set_no_attribute_on_the_module():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = Linear("2x0e + 1x1o", "1x0e + 1x1o")

        def forward(self, x):
            return self.lin(x) * 2.0

    x = torch.randn(3, 5)
    for compile_it in (
        lambda m: jit.script(m),
        lambda m: jit.trace(m, (x,)),
        lambda m: jit.trace_module(m, {"forward": (x,)}, [{"forward": (torch.randn(2, 5),)}]),
    ):
        model = Model()
        attributes = set(model.__dict__)
        compiled = compile_it(model)
        assert isinstance(compiled, torch.jit.ScriptModule)
        assert set(model.__dict__) == attributes
        assert "__e3nn_compile_mode__" not in model.__dict__
        assert "_make_tracing_inputs" not in model.__dict__
        assert isinstance(model.lin, torch.jit.ScriptModule)  # in_place=True, as in e3nn
        assert torch.allclose(compiled(x), Model.forward(model, x))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_trace_module_uses_check_inputs(watch):
    """A data-dependent branch frozen by the trace is caught on a check input."""

    class Branchy(torch.nn.Module):
        def forward(self, x):
            if bool(x.sum() > 0):
                return x * 2.0
            return x - 1.0

    model = Branchy()
    check = watch(model)
    positive = torch.ones(2, 3)
    negative = -3.0 * torch.ones(2, 3)  # eager: x - 1 = -4; frozen trace: 2 x = -6
    traced = jit.trace_module(model, {"forward": (positive,)}, in_place=False)
    assert torch.equal(traced(negative), negative * 2.0)  # frozen: the trace took one branch
    with pytest.raises(ts.VerificationError) as info:
        jit.trace_module(model, {"forward": (positive,)}, [{"forward": (negative,)}])
    assert info.value.path == ""
    with pytest.raises(ts.VerificationError):
        jit.trace(model, (positive,), [(negative,)])
    check()


def test_trace_without_inputs_infers_them_from_irreps():
    norm = e3nn.o3.Norm("2x0e + 1x1o")
    traced = jit.trace(norm, in_place=False)
    assert isinstance(traced, torch.jit.ScriptModule)
    x = torch.randn(6, 5)
    assert torch.allclose(traced(x), norm(x))


def test_script_warns_when_mode_differs():
    norm = e3nn.o3.Norm("2x1o")  # e3nn marks it "trace"
    with pytest.warns(
        ts.TorchstitchWarning, match="script a module of type Norm marked with compile mode 'trace'"
    ):
        scripted = jit.script(norm, in_place=False)
    x = torch.randn(3, 6)
    assert torch.allclose(scripted(x), norm(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ts.TorchstitchWarning)
        warnings.simplefilter("ignore", ts.TorchScriptDeprecationWarning)
        jit.trace(norm, (x,), in_place=False)  # no warning: its mode is "trace"
    lin = Linear("2x0e", "2x0e")
    with pytest.warns(
        ts.TorchstitchWarning, match="trace a module of type Linear marked with compile mode 'script'"
    ):
        jit.trace(lin, (torch.randn(2, 2),), in_place=False)


def test_get_tracing_inputs_from_make_tracing_inputs():
    class WithInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 3, dtype=torch.float64))

        def forward(self, x, index):
            return x[index] @ self.w

        def _make_tracing_inputs(self, n):
            return [{"forward": (torch.randn(4, 3), torch.tensor([0, 2]))} for _ in range(n)]

    inputs = jit.get_tracing_inputs(WithInputs(), n=3)
    assert len(inputs) == 3
    x, index = inputs[0]["forward"]
    assert x.dtype == torch.float64  # moved to the module's floating dtype, as e3nn does
    assert index.dtype == torch.int64  # integer tensors keep theirs
    inputs = jit.get_tracing_inputs(WithInputs(), dtype=torch.float32)
    assert inputs[0]["forward"][0].dtype == torch.float32


def test_get_tracing_inputs_from_irreps():
    tp = e3nn.o3.FullyConnectedTensorProduct("2x0e + 1x1o", "1x1o", "1x0e")
    inputs = jit.get_tracing_inputs(tp, n=2)
    assert len(inputs) == 2
    x1, x2 = inputs[0]["forward"]
    assert x1.shape[1:] == (5,) and x2.shape[1:] == (3,)
    assert x1.dtype == torch.get_default_dtype()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation and tracer warnings
        torch.jit.trace_module(tp, inputs[0], check_trace=False)  # in the trace_module format


def test_get_tracing_inputs_errors():
    with pytest.raises(ts.TracingInputsError, match="cannot make tracing inputs for ReLU") as info:
        jit.get_tracing_inputs(torch.nn.ReLU())
    assert isinstance(info.value, ValueError)  # e3nn raises ValueError here

    class Malformed(torch.nn.Module):
        def forward(self, x):
            return x

        def _make_tracing_inputs(self, n):
            return [{"forward": torch.randn(2)}]  # not a tuple

    with pytest.raises(ts.TracingInputsError, match=r"item 0\['forward'\] is a Tensor, not a tuple"):
        jit.get_tracing_inputs(Malformed())


@pytest.mark.skipif(not hasattr(e3nn_jit, "disable_e3nn_codegen"), reason="e3nn lacks it")
def test_disable_e3nn_codegen_restores_exactly():
    before = e3nn.get_optimization_defaults()
    try:
        with jit.disable_e3nn_codegen():
            inside = e3nn.get_optimization_defaults()
            lin = Linear("2x0e", "2x0e")
        assert inside["jit_script_fx"] is False
        assert inside["jit_mode"] == "eager"
        assert isinstance(lin._compiled_main, torch.fx.GraphModule)
        assert e3nn.get_optimization_defaults() == before

        with pytest.raises(KeyError):
            with jit.disable_e3nn_codegen():
                raise KeyError("boom")
        assert e3nn.get_optimization_defaults() == before

        # from a non-default state too
        e3nn.set_optimization_defaults(jit_mode="script")
        changed = e3nn.get_optimization_defaults()
        with jit.disable_e3nn_codegen():
            assert e3nn.get_optimization_defaults()["jit_mode"] == "eager"
        assert e3nn.get_optimization_defaults() == changed
    finally:
        e3nn.set_optimization_defaults(jit_script_fx=before["jit_script_fx"], jit_mode=before["jit_mode"])


@jit.compile_mode("trace")
class _DoubleMat(torch.nn.Module):
    """A float64 module whose _make_tracing_inputs returns default-dtype tensors."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, 3, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w

    def _make_tracing_inputs(self, n):
        return [{"forward": (torch.randn(2, 3),)} for _ in range(n)]


def test_compile_casts_make_tracing_inputs_to_module_dtype():
    mod = _DoubleMat()
    compiled = jit.compile(mod, in_place=False)
    x = torch.randn(2, 3, dtype=torch.float64)
    assert torch.allclose(compiled(x), mod(x))
