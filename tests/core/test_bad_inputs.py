"""The bad-input catalogue: every way a caller, a model or a plugin can hand torchstitch
something wrong, the error each one gets, the path the message names, and a model left
exactly as it was.

One parametrized table: each case builds ``(model, call)``; ``call()`` must raise the
documented error type, whose message names the offending node path (``'<root>'`` for the
root), whose ``__cause__`` is the original exception where one was wrapped, and after
which ``model`` is unchanged (state_dict values, submodule identities, attribute names).
"""

import math
from typing import NamedTuple

import attrs
import pytest
import torch
from modules import Branch, Leaf, ScriptedLeaf, Stack, TracedLeaf, Unscriptable, UnsupportedLeaf
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore::torchstitch.TorchstitchWarning"),
]


# --------------------------------------------------------------------------
# tiny modules (no `from __future__ import annotations`: TorchScript reads these)
# --------------------------------------------------------------------------


class Wrap(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.post = nn.Linear(4, 4)

    def forward(self, x):
        return self.post(self.inner(x))


class Pair(nn.Module):
    """``a`` then ``b``; the same instance may sit at both."""

    def __init__(self, a, b):
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x):
        return self.b(self.a(x))


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        raise ValueError("boom in the leaf")


class NeverCalled(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = Leaf()
        self.unused = TracedLeaf()

    def forward(self, x):
        return self.used(x)


@ts.compile_mode("trace")
class MakesNaN(nn.Module):
    def forward(self, x):
        return x * float("nan")


class NaNTail(nn.Module):
    """Undecorated: compiled as part of whatever region holds it."""

    def forward(self, x):
        return x * float("nan")


class BothSigns(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch = Branch()

    def forward(self, x):
        return self.branch(x) + self.branch(-x)


class UsesUnused(Leaf):
    """Scripts (the method is not compiled) and raises when run."""

    @torch.jit.unused
    def helper(self, x):
        return x * 2.0

    def forward(self, x):
        return self.helper(self.lin(x))


class UsesIgnored(UsesUnused):
    """Scripts and runs (the method stays in Python), but cannot be saved."""

    @torch.jit.ignore
    def helper(self, x):
        return x * 2.0


class Symmetric(nn.Module):
    def forward(self, w):
        return w.triu() + w.triu(1).transpose(-1, -2)


def parametrized_leaf():
    leaf = nn.Linear(4, 4)
    nn.utils.parametrize.register_parametrization(leaf, "weight", Symmetric())
    return leaf


class RunsLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 4)

    def forward(self, x):
        return self.rnn(x)[0] * 2.0


class Halves(NamedTuple):
    low: torch.Tensor
    high: torch.Tensor


class SplitsInTwo(nn.Module):
    def forward(self, x):
        return Halves(x[:, :2], x[:, 2:])


@ts.compile_mode("trace")
class TracedSplit(SplitsInTwo):
    pass


class ReadsFields(nn.Module):
    """A Python parent reading a traced child's NamedTuple fields."""

    def __init__(self):
        super().__init__()
        self.split = TracedSplit()

    def forward(self, x):
        out = self.split(x)
        return torch.cat([out.high, out.low], dim=1)


def _raise(exc):
    raise exc


def traced_with(make):
    """A traced leaf whose ``_make_tracing_inputs`` returns ``make()``."""

    class Made(TracedLeaf):
        def _make_tracing_inputs(self, n):
            return make()

    return Made()


def x4(batch=2):
    return torch.randn(batch, 4)


# --------------------------------------------------------------------------
# test plugins
# --------------------------------------------------------------------------


class Claimer:
    """Claims ``path`` for ``strategy`` with kind ``rule``."""

    def __init__(self, name, path, strategy, kind="rule"):
        self.name = name
        self.path = path
        self.strategy = strategy
        self.kind = kind

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        if path == self.path:
            return ts.Claim(self.strategy, self.kind, f"claimer {self.name}")
        return None


class Boom(ZeroDivisionError):
    pass


class RaisingClaim:
    name = "raising-claim"

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        if path == "layers.1":
            raise Boom("the claim hook exploded")


class StrategyPlugin:
    """Registers one strategy ``name`` compiling with ``fn``."""

    def __init__(self, strategy, fn, name=None, **kw):
        self.name = name or f"plugin-{strategy}"
        self.strategy = ts.Strategy(name=strategy, family=kw.pop("family", "torchscript"), compile=fn, **kw)

    @ts.hookimpl
    def torchstitch_strategies(self):
        return [self.strategy]


class GarbageStrategies:
    name = "garbage"

    @ts.hookimpl
    def torchstitch_strategies(self):
        return "script"


class RaisingInputs:
    name = "raising-inputs"

    @ts.hookimpl(tryfirst=True)
    def torchstitch_tracing_inputs(self, node):
        if node.path == "layers.1":
            raise OSError("cannot read the inputs file")
        return None


class DictInputs:
    name = "dict-inputs"

    @ts.hookimpl(tryfirst=True)
    def torchstitch_tracing_inputs(self, node):
        if node.path == "layers.1":
            return {"forward": (x4(),)}  # not a list
        return None


class BadPrepare:
    name = "bad-prepare"

    @ts.hookimpl
    def torchstitch_prepare(self, module, node):
        return "not a module" if node.path == "layers.1" else None


class Explodes(nn.Module):
    def forward(self, x):
        raise ArithmeticError("the compiled piece explodes")


def _save_path(tmp_path):
    return tmp_path / "m.pt"


def _raising_where(module, path):
    if path == "layers.1":
        raise LookupError("the predicate failed")
    return False


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------


@attrs.frozen
class Case:
    #: ``build(tmp_path) -> (model, call)``
    build: object
    #: the error type ``call()`` raises
    error: type
    #: ``err.path`` (``""``: the root); ``None``: the error is about no node
    path: str | None = None
    #: fragments the message must contain (besides the path)
    texts: tuple = ()
    #: type of ``err.__cause__``; ``None``: nothing is required of it
    cause: type | None = None
    #: other classes the error must also be an instance of
    also: tuple = ()
    #: the model has a cycle: ``watch`` (``named_modules``, ``state_dict``) would recurse forever
    cyclic: bool = False


def _simple(call):
    """A case whose call needs only the model: ``call(model)``."""

    def build(tmp_path):
        model = Stack(Leaf(), TracedLeaf())
        return model, lambda: call(model)

    return build


def _with(model_factory, call):
    def build(tmp_path):
        model = model_factory()
        return model, lambda: call(model)

    return build


def _compile(model_factory, **kw):
    return _with(model_factory, lambda m: ts.compile(m, **kw))


def _script_second(make_leaf):
    """``Stack(Leaf(), make_leaf())`` compiled with ``layers.1`` scripted, on example inputs."""
    return _compile(
        lambda: Stack(Leaf(), make_leaf()), rules=[ts.Rule("script", path="layers.1")], example_inputs=(x4(),)
    )


def _in_place_deep_failure(tmp_path):
    model = Stack(TracedLeaf(), Wrap(Pair(ScriptedLeaf(), Unscriptable())))
    return model, lambda: ts.compile(model, example_inputs=(x4(),), in_place=True)


def _save_python_root(tmp_path):
    model = Stack(Leaf(), TracedLeaf())
    compiled = ts.compile(model, example_inputs=(x4(),))
    return model, lambda: ts.save(compiled, _save_path(tmp_path))


def _save_unknown_format(tmp_path):
    model = Stack(Leaf())
    compiled = ts.script(model)
    return model, lambda: ts.save(compiled, _save_path(tmp_path), format="onnx")


def _save_ignored_call(tmp_path):
    model = Stack(Leaf(), UsesIgnored())
    compiled = ts.script(model)
    return model, lambda: ts.save(compiled, _save_path(tmp_path))


def _save_to(where):
    def build(tmp_path):
        (tmp_path / "a-file").write_text("")
        model = Stack(Leaf())
        compiled = ts.script(model)
        return model, lambda: ts.save(compiled, tmp_path / where)

    return build


def _load_missing(tmp_path):
    return Stack(Leaf()), lambda: ts.load(tmp_path / "missing.pt")


def _load_non_artifact(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    return Stack(Leaf()), lambda: ts.load(path)


def _self_containing(tmp_path):
    model = Stack(Leaf())
    model.layers.add_module("1", model)  # the root is its own grandchild
    return model, lambda: ts.plan(model)


def _two_module_cycle(tmp_path):
    inner = Wrap(Leaf())
    model = Pair(Leaf(), inner)
    inner.inner.add_module("back", inner)  # b.inner.back is b
    return model, lambda: ts.compile(model)


def _shared_conflicting(tmp_path):
    leaf = Leaf()
    model = Pair(leaf, leaf)
    rules = [ts.Rule("script", path="a"), ts.Rule("trace", path="b")]
    return model, lambda: ts.compile(model, rules=rules, example_inputs=(x4(),))


def _shared_claimed_once(tmp_path):
    leaf = Leaf()
    model = Pair(leaf, leaf)
    return model, lambda: ts.compile(model, rules=[ts.Rule("script", path="b")])


def _set_compile_mode_unknown(tmp_path):
    model = Stack(Leaf())
    return model, lambda: ts.set_compile_mode(model.layers[0], "scirpt")


def _compile_mode_on(cls):
    return lambda tmp_path: (Stack(Leaf()), lambda: ts.compile_mode("script")(cls))


def _ambiguous(tmp_path):
    model = Stack(Leaf(), Leaf())
    plugins = [Claimer("A", "layers.0", "script"), Claimer("B", "layers.0", "trace")]
    return model, lambda: ts.compile(model, plugins=plugins, example_inputs=(x4(),))


def _plugin(plugins, rules=(), model_factory=None, **kw):
    def build(tmp_path):
        model = (model_factory or (lambda: Stack(Leaf(), Leaf())))()
        return model, lambda: ts.compile(
            model, plugins=plugins(), rules=list(rules), example_inputs=(x4(),), **kw
        )

    return build


def _wrong_type_rules(tmp_path):
    model = Stack(Leaf())
    return model, lambda: ts.compile(model, rules=[ts.Rule("script", path="layers.0"), "trace"])


def _non_class_type_rule(tmp_path):
    return Stack(Leaf()), lambda: ts.Rule("script", type="Linear")


def _rule(**kw):
    return lambda tmp_path: (Stack(Leaf()), lambda: ts.Rule("script", **kw))


def _locate_without_inputs(tmp_path):
    model = Stack(Leaf())
    return model, lambda: ts.locate(model, ts.script(model), None)


CASES = {
    # ---- the module argument -------------------------------------------------
    "non-module-function": Case(
        lambda tmp_path: (Stack(Leaf()), lambda: ts.compile(torch.tanh)),
        TypeError,
        texts=("torch.nn.Module",),
    ),
    "non-module-state-dict": Case(
        _simple(lambda m: ts.plan(m.state_dict())), TypeError, texts=("torch.nn.Module",)
    ),
    "module-containing-itself": Case(
        _self_containing,
        ts.PlanError,
        path="layers.1",
        texts=("contains itself", "<root>"),
        cyclic=True,
    ),
    "two-module-cycle": Case(
        _two_module_cycle,
        ts.PlanError,
        path="b.inner.back",
        texts=("contains itself", "ancestor at b"),
        cyclic=True,
    ),
    # ---- example_inputs ------------------------------------------------------
    "example-inputs-too-many": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), example_inputs=(x4(), x4())),
        ts.TracingInputsError,
        path="",
        texts=("2 positional argument",),
        cause=TypeError,
    ),
    "example-inputs-none": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), example_inputs=()),
        ts.TracingInputsError,
        path="",
        texts=("0 positional argument",),
        cause=TypeError,
    ),
    "example-inputs-string": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), example_inputs="x"),
        TypeError,
        texts=("example_inputs", "str"),
    ),
    "example-inputs-dict": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), example_inputs={"x": x4()}),
        TypeError,
        texts=("example_inputs", "dict"),
    ),
    "example-inputs-wrong-shape": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), example_inputs=(torch.randn(2, 5),)),
        ts.TracingInputsError,
        path="layers.0.lin",
        texts=("eager run on example_inputs raised RuntimeError",),
        cause=RuntimeError,
    ),
    "example-inputs-holding-none": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), example_inputs=(None,)),
        ts.TracingInputsError,
        path="layers.0.lin",
        texts=("NoneType",),
        cause=TypeError,
    ),
    "trace-check-inputs-wrong-shape": Case(
        _with(Leaf, lambda m: ts.trace(m, x4(), check_inputs=[(torch.randn(2, 5),)])),
        ts.VerificationError,
        path="",
        texts=("tracing inputs raised RuntimeError",),
        cause=RuntimeError,
    ),
    "trace-check-inputs-wrong-type": Case(
        _with(Leaf, lambda m: ts.trace(m, x4(), check_inputs=["x"])), TypeError, texts=("str",)
    ),
    "trace-module-unknown-method": Case(
        _with(Leaf, lambda m: ts.trace_module(m, {"forwrd": (x4(),)})),
        ts.TracingInputsError,
        path="",
        texts=("'forwrd'", "inputs.caller"),
    ),
    # ---- _make_tracing_inputs ------------------------------------------------
    "make-inputs-tuple-not-list": Case(
        _compile(lambda: Stack(Leaf(), traced_with(lambda: ({"forward": (x4(),)},)))),
        ts.TracingInputsError,
        path="layers.1",
        texts=("inputs.method", "tuple, not a list"),
    ),
    "make-inputs-empty-list": Case(
        _compile(lambda: Stack(Leaf(), traced_with(lambda: []))),
        ts.TracingInputsError,
        path="layers.1",
        texts=("inputs.method", "empty list"),
    ),
    "make-inputs-value-not-tuple": Case(
        _compile(lambda: Stack(Leaf(), traced_with(lambda: [{"forward": [x4()]}]))),
        ts.TracingInputsError,
        path="layers.1",
        texts=("inputs.method", "list, not a tuple"),
    ),
    "make-inputs-tensor-value": Case(
        _compile(lambda: Stack(Leaf(), traced_with(lambda: [{"forward": x4()}]))),
        ts.TracingInputsError,
        path="layers.1",
        texts=("Tensor, not a tuple",),
    ),
    "make-inputs-unknown-method": Case(
        _compile(lambda: Stack(Leaf(), traced_with(lambda: [{"forwrd": (x4(),)}]))),
        ts.TracingInputsError,
        path="layers.1",
        texts=("'forwrd'", "lacks"),
    ),
    "make-inputs-non-string-key": Case(
        _compile(lambda: Stack(Leaf(), traced_with(lambda: [{0: (x4(),)}]))),
        ts.TracingInputsError,
        path="layers.1",
        texts=("non-string key 0",),
    ),
    "make-inputs-item-not-dict": Case(
        _compile(lambda: Stack(Leaf(), traced_with(lambda: [(x4(),)]))),
        ts.TracingInputsError,
        path="layers.1",
        texts=("item 0 is tuple",),
    ),
    "make-inputs-crash-the-trace": Case(
        # the only input has the wrong width: torch.jit.trace_module itself raises
        _compile(lambda: Stack(Leaf(), traced_with(lambda: [{"forward": (torch.randn(2, 7),)}]))),
        ts.NodeCompileError,
        path="layers.1",
        texts=("trace failed", "RuntimeError"),
        cause=RuntimeError,
    ),
    "make-inputs-crash-on-second-input": Case(
        # the trace (on input 0) works; running on input 1 during verification raises
        _compile(
            lambda: Stack(
                Leaf(),
                traced_with(lambda: [{"forward": (x4(),)}, {"forward": (torch.randn(2, 7),)}]),
            )
        ),
        ts.VerificationError,
        path="layers.1",
        texts=("raised RuntimeError",),
        cause=RuntimeError,
    ),
    "make-inputs-raises": Case(
        _compile(lambda: Stack(Leaf(), traced_with(lambda: _raise(KeyError("no inputs"))))),
        ts.PluginError,
        path="layers.1",
        texts=("'inputs.method'", "torchstitch_tracing_inputs", "KeyError"),
        cause=KeyError,
    ),
    # ---- inputs that no provider has -----------------------------------------
    "trace-node-never-reached": Case(
        _compile(NeverCalled, example_inputs=(x4(),)),
        ts.TracingInputsError,
        path="unused",
        texts=("never called", "inputs.caller", "inputs.method", "inputs.recorded"),
    ),
    "trace-node-without-any-inputs": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf())),
        ts.TracingInputsError,
        path="layers.1",
        texts=("no example_inputs", "_make_tracing_inputs"),
    ),
    # ---- rules ---------------------------------------------------------------
    "rule-unknown-strategy": Case(
        _compile(lambda: Stack(Leaf()), rules=[ts.Rule("tarce", path="layers.0")]),
        ts.UnknownStrategyError,
        texts=("'tarce'", "'script'", "'trace'"),
        also=(ValueError,),
    ),
    "plugin-claim-unknown-strategy": Case(
        _plugin(lambda: [Claimer("C", "layers.1", "jit")]),
        ts.UnknownStrategyError,
        path="layers.1",
        texts=("'jit'", "'script'", "claimer C"),
    ),
    "root-strategy-unknown": Case(
        _with(lambda: Stack(Leaf()), lambda m: ts.Engine().compile(m, root_strategy="scirpt")),
        ts.UnknownStrategyError,
        path="",
        texts=("'scirpt'",),
    ),
    "root-strategy-not-a-name": Case(
        _with(lambda: Stack(Leaf()), lambda m: ts.Engine().compile(m, root_strategy=3)),
        TypeError,
        texts=("root_strategy",),
    ),
    "glob-unbalanced-bracket": Case(_rule(path="layers.[0"), ts.PlanError, texts=("'layers.[0'",)),
    "glob-empty-component": Case(_rule(path="layers..0"), ts.PlanError, texts=("'layers..0'", "empty")),
    "glob-double-star-inside": Case(_rule(path="lay**.0"), ts.PlanError, texts=("'lay**.0'", "'**'")),
    "rule-without-conditions": Case(_rule(), ts.PlanError, texts=("no condition",)),
    "rule-type-not-a-class": Case(_non_class_type_rule, TypeError, texts=("type=",)),
    "rules-not-a-rule": Case(_wrong_type_rules, TypeError, texts=("rules[1]", "torchstitch.Rule")),
    "rule-where-raises": Case(
        _compile(lambda: Stack(Leaf(), Leaf()), rules=[ts.Rule("script", where=_raising_where)]),
        ts.PlanError,
        path="layers.1",
        texts=("LookupError",),
        cause=LookupError,
    ),
    # ---- options -------------------------------------------------------------
    "on-error-unknown": Case(
        _compile(lambda: Stack(Leaf()), on_error="ignore"), ValueError, texts=("on_error", "'fallback'")
    ),
    "n-trace-checks-zero": Case(
        _compile(lambda: Stack(Leaf()), n_trace_checks=0), ValueError, texts=("n_trace_checks",)
    ),
    "n-trace-checks-bool": Case(
        _compile(lambda: Stack(Leaf()), n_trace_checks=True), ValueError, texts=("n_trace_checks",)
    ),
    "n-trace-checks-str": Case(
        _compile(lambda: Stack(Leaf()), n_trace_checks="2"), ValueError, texts=("n_trace_checks",)
    ),
    "script-options-not-a-dict": Case(
        _compile(lambda: Stack(Leaf()), script_options=["optimize"]), TypeError, texts=("dict",)
    ),
    "script-options-unknown-keyword": Case(
        _compile(lambda: Stack(ScriptedLeaf()), script_options={"bogus": 1}),
        ts.NodeCompileError,
        path="layers.0",
        texts=("bogus",),
        cause=TypeError,
    ),
    "trace-options-unknown-keyword": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), example_inputs=(x4(),), trace_options={"bogus": 1}),
        ts.NodeCompileError,
        path="layers.1",
        texts=("bogus",),
        cause=TypeError,
    ),
    "target-unknown": Case(
        _compile(lambda: Stack(Leaf()), target="onnx"), ts.PlanError, texts=("'onnx'", "'torchscript'")
    ),
    "freeze-training-model": Case(
        _with(lambda: Stack(Leaf()).train(), lambda m: ts.script(m, freeze=True)),
        ts.PlanError,
        path="",
        texts=("eval",),
    ),
    "freeze-python-root": Case(
        _with(lambda: Stack(ScriptedLeaf()).eval(), lambda m: ts.compile(m, freeze=True)),
        ts.PlanError,
        path="",
        texts=("stays in Python",),
    ),
    # ---- inputs= -------------------------------------------------------------
    "inputs-unknown-path": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), inputs={"layers.2": (x4(),)}),
        ts.PlanError,
        path="layers.2",
        texts=("'layers.1'",),
    ),
    "inputs-bad-value-type": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), inputs={"layers.1": "x"}),
        ts.TracingInputsError,
        path="layers.1",
        texts=("str",),
    ),
    "inputs-malformed-item": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), inputs={"layers.1": [{"forward": [x4()]}]}),
        ts.TracingInputsError,
        path="layers.1",
        texts=("inputs.caller", "list, not a tuple"),
    ),
    "inputs-not-a-dict": Case(
        _compile(lambda: Stack(Leaf(), TracedLeaf()), inputs=[(x4(),)]), TypeError, texts=("inputs=",)
    ),
    # ---- plugins= and plugins ------------------------------------------------
    "plugins-a-string": Case(
        _compile(lambda: Stack(Leaf()), plugins="no:trace"), TypeError, texts=("plugins=", "no:trace")
    ),
    "plugins-bad-string-entry": Case(
        _compile(lambda: Stack(Leaf()), plugins=["trace"]), ValueError, texts=("no:NAME", "'trace'")
    ),
    "ambiguous-claims": Case(
        _ambiguous,
        ts.AmbiguousClaimError,
        path="layers.0",
        texts=("claimer A says 'script'", "claimer B says 'trace'", "Rule("),
    ),
    "plugin-override-claim": Case(
        _plugin(lambda: [Claimer("O", "layers.0", "script", kind="override")]),
        ts.PluginError,
        path="layers.0",
        texts=("'O'", "override"),
    ),
    "claim-hook-raises": Case(
        _plugin(lambda: [RaisingClaim()]),
        ts.PluginError,
        path="layers.1",
        texts=("'raising-claim'", "torchstitch_claim", "Boom"),
        cause=Boom,
    ),
    "strategies-hook-garbage": Case(
        _plugin(lambda: [GarbageStrategies()]), ts.PluginError, texts=("'garbage'", "torchstitch_strategies")
    ),
    "two-plugins-one-strategy-name": Case(
        _plugin(lambda: [StrategyPlugin("script", lambda m, c: m, name="my-script")]),
        ts.PluginError,
        texts=("'my-script'", "'script'"),
    ),
    "strategy-returns-non-module": Case(
        _plugin(
            lambda: [StrategyPlugin("answer", lambda m, c: 42)], rules=[ts.Rule("answer", path="layers.1")]
        ),
        ts.PluginError,
        path="layers.1",
        texts=("'plugin-answer'", "int, not a torch.nn.Module"),
    ),
    "strategy-raises-stitch-error": Case(
        _plugin(
            lambda: [
                StrategyPlugin(
                    "picky",
                    lambda m, c: _raise(ts.PlanError("picky refuses", path=c.node.path)),
                )
            ],
            rules=[ts.Rule("picky", path="layers.1")],
        ),
        ts.PlanError,
        path="layers.1",
        texts=("picky refuses",),
    ),
    "prepare-returns-non-module": Case(
        _plugin(lambda: [BadPrepare()], rules=[ts.Rule("script", path="layers.1")]),
        ts.PluginError,
        path="layers.1",
        texts=("'bad-prepare'", "torchstitch_prepare"),
    ),
    "inputs-provider-raises": Case(
        _plugin(lambda: [RaisingInputs()], rules=[ts.Rule("trace", path="layers.1")]),
        ts.PluginError,
        path="layers.1",
        texts=("'raising-inputs'", "torchstitch_tracing_inputs", "OSError"),
        cause=OSError,
    ),
    "inputs-provider-returns-dict": Case(
        _plugin(lambda: [DictInputs()], rules=[ts.Rule("trace", path="layers.1")]),
        ts.TracingInputsError,
        path="layers.1",
        texts=("'dict-inputs'", "dict, not a list"),
    ),
    # ---- the eager run and verification -------------------------------------
    "forward-raises-during-recording": Case(
        _compile(lambda: Stack(Leaf(), Wrap(Raises()), TracedLeaf()), example_inputs=(x4(),)),
        ts.TracingInputsError,
        path="layers.1.inner",
        texts=("boom in the leaf",),
        cause=ValueError,
    ),
    "nan-output-of-traced-node": Case(
        _compile(lambda: Stack(Leaf(), MakesNaN()), example_inputs=(x4(),)),
        ts.VerificationError,
        path="layers.1",
        texts=("NaN",),
    ),
    "nan-output-of-scripted-root": Case(
        _with(lambda: Stack(Leaf(), NaNTail()), lambda m: ts.script(m, example_inputs=(x4(),))),
        ts.VerificationError,
        path="",
        texts=("NaN",),
    ),
    "traced-branch-seen-both-ways": Case(
        _compile(
            BothSigns, rules=[ts.Rule("trace", path="branch")], example_inputs=(torch.rand(2, 4) + 0.1,)
        ),
        ts.VerificationError,
        path="branch",
        texts=("tracing input 1", "'script'"),
    ),
    "compiled-model-raises-at-root-verification": Case(
        _plugin(
            lambda: [StrategyPlugin("explode", lambda m, c: Explodes(), family="python")],
            rules=[ts.Rule("explode", path="layers.1")],
        ),
        ts.VerificationError,
        path="layers.1",
        texts=("ArithmeticError", "the compiled piece explodes"),
        cause=ArithmeticError,
    ),
    "scripted-child-calls-unused-method": Case(
        _script_second(UsesUnused),
        ts.VerificationError,
        path="layers.1",
        texts=("RuntimeError: This Python function is annotated to be ignored and cannot be run",),
        cause=torch.jit.Error,
    ),
    "scripted-parametrization": Case(
        _script_second(parametrized_leaf),
        ts.VerificationError,
        path="layers.1",
        texts=("RuntimeError: Parametrization is not working with scripting",),
    ),
    "scripted-lstm": Case(
        _compile(RunsLSTM, rules=[ts.Rule("script", path="rnn")], example_inputs=(torch.randn(3, 2, 4),)),
        ts.VerificationError,
        path="rnn",
        texts=("AttributeError", "no attribute 'forward'"),
        cause=AttributeError,
    ),
    "traced-namedtuple-read-by-python-parent": Case(
        _compile(ReadsFields, example_inputs=(x4(),)),
        ts.VerificationError,
        path="split",
        texts=("a NamedTuple Halves(low, high)", "got a tuple of 2", "'script'"),
    ),
    "trace-of-namedtuple-root": Case(
        _with(SplitsInTwo, lambda m: ts.trace(m, (x4(),))),
        ts.VerificationError,
        path="",
        texts=("a NamedTuple Halves(low, high)", "got a tuple of 2"),
    ),
    # ---- plan validation -----------------------------------------------------
    "unsupported-inside-script": Case(
        _with(lambda: Stack(Leaf(), UnsupportedLeaf()), lambda m: ts.script(m)),
        ts.UnsupportedModuleError,
        path="layers.1",
        texts=("'unsupported'", "'script' region"),
        also=(NotImplementedError, ts.PlanError),
    ),
    "unsupported-inside-traced-parent": Case(
        _compile(
            lambda: Stack(Leaf(), TracedLeaf(), Wrap(UnsupportedLeaf())),
            rules=[ts.Rule("trace", path="layers.2")],
        ),
        ts.UnsupportedModuleError,
        path="layers.2.inner",
        texts=("'trace' region rooted at layers.2",),
        also=(NotImplementedError,),
    ),
    "shared-module-conflicting-claims": Case(
        _shared_conflicting,
        ts.PlanError,
        path="b",
        texts=("shared by paths a ('script'", "and b ('trace'"),
    ),
    "shared-module-claimed-at-one-path": Case(
        _shared_claimed_once, ts.PlanError, path="b", texts=("shared by paths a (inherits)", "b ('script'")
    ),
    "lazy-module-run-by-example-inputs": Case(
        _compile(lambda: Stack(nn.LazyLinear(4), ScriptedLeaf()), example_inputs=(x4(),)),
        ts.PlanError,
        path="layers.0",
        texts=("LazyLinear has uninitialized parameters", "run the model once first"),
        also=(ValueError,),
    ),
    "meta-model-verified": Case(
        _compile(
            lambda: Stack(ScriptedLeaf(), nn.BatchNorm1d(4)).to("meta"),
            example_inputs=(x4().to("meta"),),
        ),
        ts.VerificationError,
        path="",
        texts=("meta device", "verify=False"),
    ),
    "in-place-failure-deep-in-the-tree": Case(
        _in_place_deep_failure,
        ts.NodeCompileError,
        path="layers.1.inner.b",
        texts=("script failed",),
    ),
    # ---- decorators ----------------------------------------------------------
    "compile-mode-on-non-module-class": Case(
        _compile_mode_on(dict), TypeError, texts=("torch.nn.Module", "dict")
    ),
    "compile-mode-on-instance": Case(
        lambda tmp_path: (Stack(Leaf()), lambda: ts.compile_mode("script")(Leaf())),
        TypeError,
        texts=("torch.nn.Module",),
    ),
    "compile-mode-unknown-mode": Case(
        lambda tmp_path: (Stack(Leaf()), lambda: ts.compile_mode("scirpt")),
        ValueError,
        texts=("'scirpt'", "'script'", "'trace'", "'unsupported'", "None"),
    ),
    "compile-mode-non-string-mode": Case(
        lambda tmp_path: (Stack(Leaf()), lambda: ts.compile_mode(3)), TypeError, texts=("int",)
    ),
    "set-compile-mode-non-module": Case(
        lambda tmp_path: (Stack(Leaf()), lambda: ts.set_compile_mode(torch.tanh, "script")),
        TypeError,
        texts=("torch.nn.Module",),
    ),
    "set-compile-mode-unknown-mode": Case(
        _set_compile_mode_unknown, ValueError, texts=("'scirpt'", "'script'")
    ),
    # ---- artifacts -----------------------------------------------------------
    "save-python-root": Case(_save_python_root, ts.ArtifactError, path="", texts=("left in Python",)),
    "save-unknown-format": Case(_save_unknown_format, ts.ArtifactError, texts=("'onnx'", "torchscript")),
    "save-ignored-method-call": Case(
        _save_ignored_call,
        ts.ArtifactError,
        path="layers.1",
        texts=("'helper'", "@torch.jit.ignore"),
        cause=RuntimeError,
    ),
    "save-into-missing-directory": Case(
        _save_to("missing/m.pt"), ts.ArtifactError, texts=("missing", "does not exist"), also=(OSError,)
    ),
    "save-below-a-file": Case(
        _save_to("a-file/m.pt"), ts.ArtifactError, texts=("a-file", "is a file"), also=(OSError,)
    ),
    "load-missing-file": Case(_load_missing, ts.ArtifactError, texts=("missing.pt",), also=(OSError,)),
    "load-non-artifact": Case(_load_non_artifact, ts.ArtifactError, texts=("state.pt",)),
    "locate-without-example-inputs": Case(_locate_without_inputs, TypeError, texts=("example_inputs",)),
}


def _params():
    return [
        pytest.param(
            case,
            id=name,
        )
        for name, case in CASES.items()
    ]


def _cycle_safe_watch(model):
    """``watch`` for a model with a cycle: each module once, by identity."""

    def state():
        seen, out, stack = set(), [], [("", model)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            tensors = {k: v.detach().clone() for k, v in {**module._parameters, **module._buffers}.items()}
            children = [(k, id(v)) for k, v in module._modules.items()]
            out.append((name, id(module), sorted(module.__dict__), children, tensors))
            stack.extend((f"{name}.{k}", v) for k, v in module._modules.items() if v is not None)
        return out

    before = state()

    def check():
        after = state()
        assert [a[:4] for a in after] == [b[:4] for b in before]
        for a, b in zip(after, before):
            assert a[4].keys() == b[4].keys()
            assert all(torch.equal(a[4][k], b[4][k]) for k in a[4])

    return check


def _forward_hooks(model):
    """The forward hooks on each module (a lazy module has its own, until its first forward)."""
    return {
        (name or "<root>", hooks): list(getattr(module, hooks).values())
        for name, module in model.named_modules()
        for hooks in ("_forward_pre_hooks", "_forward_hooks")
    }


def _nothing_compiled_inside(model):
    for name, module in model.named_modules():
        assert not isinstance(module, torch.jit.ScriptModule), f"{name or '<root>'} was replaced"
        assert "__overloads__" not in module.__dict__, f"__overloads__ added to {name or '<root>'}"


def test_catalogue_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", _params())
def test_bad_input(case, watch, tmp_path):
    model, call = case.build(tmp_path)
    check = _cycle_safe_watch(model) if case.cyclic else watch(model)
    hooks = None if case.cyclic else _forward_hooks(model)
    with pytest.raises(case.error) as info:
        call()
    err = info.value
    text = str(err)
    if issubclass(case.error, ts.StitchError):
        assert isinstance(err, ts.StitchError)
    for cls in case.also:
        assert isinstance(err, cls), f"{type(err).__name__} is not a {cls.__name__}"
    if case.path is not None:
        assert err.path == case.path
        assert f"'{case.path or '<root>'}'" in text
    for fragment in case.texts:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    if case.cause is not None:
        assert isinstance(err.__cause__, case.cause), f"cause is {err.__cause__!r}"
    check()
    if not case.cyclic:
        assert _forward_hooks(model) == hooks, "forward hooks were left or removed"
        _nothing_compiled_inside(model)


# --------------------------------------------------------------------------
# details the table cannot express
# --------------------------------------------------------------------------


def test_set_compile_mode_with_unknown_mode_sets_nothing():
    leaf = Leaf()
    with pytest.raises(ValueError):
        ts.set_compile_mode(leaf, "scirpt")
    assert ts.get_compile_mode(leaf) is None
    assert "__torchstitch_compile_mode__" not in leaf.__dict__


def test_compile_mode_on_non_module_leaves_the_class_alone():
    class NotAModule:
        pass

    with pytest.raises(TypeError):
        ts.compile_mode("script")(NotAModule)
    assert not hasattr(NotAModule, "__torchstitch_compile_mode__")


def test_nan_verification_error_reports_nan_difference(watch):
    model = Stack(Leaf(), MakesNaN())
    check = watch(model)
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(model, example_inputs=(x4(),))
    assert math.isnan(info.value.max_abs_diff)
    check()


def test_in_place_deep_failure_keeps_earlier_compiled_siblings_out(watch):
    """layers.0 and layers.1.inner.a compiled before the failure; neither is committed."""
    model = Stack(TracedLeaf(), Wrap(Pair(ScriptedLeaf(), Unscriptable())))
    originals = dict(model.named_modules(remove_duplicate=False))
    check = watch(model)
    with pytest.raises(ts.NodeCompileError):
        ts.compile(model, example_inputs=(x4(),), in_place=True)
    check()
    assert dict(model.named_modules(remove_duplicate=False)) == originals
    assert type(model.layers[0]) is TracedLeaf
    assert type(model.layers[1].inner.a) is ScriptedLeaf


def test_ambiguous_claim_error_suggests_a_rule_that_settles_it(watch):
    model = Stack(Leaf(), Leaf())
    plugins = [Claimer("A", "layers.0", "script"), Claimer("B", "layers.0", "trace")]
    with pytest.raises(ts.AmbiguousClaimError):
        ts.plan(model, plugins=plugins)
    plan = ts.plan(model, plugins=plugins, rules=[ts.Rule("script", path="layers.0")])
    assert plan["layers.0"].strategy == "script"


def test_errors_survive_pickling():
    """Errors cross process boundaries (pytest-xdist, multiprocessing) intact."""
    import pickle

    model = Stack(Leaf(), Leaf())
    plugins = [RaisingClaim()]
    with pytest.raises(ts.PluginError) as info:
        ts.plan(model, plugins=plugins)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is ts.PluginError
    assert str(again) == str(info.value)
    assert (again.plugin, again.hook, again.path) == ("raising-claim", "torchstitch_claim", "layers.1")


def test_a_failing_freeze_is_a_node_compile_error_at_the_root(monkeypatch, watch):
    def refuse(module, *args, **kwargs):
        raise RuntimeError("cannot freeze this graph\ndetails")

    monkeypatch.setattr(torch.jit, "freeze", refuse)
    model = Stack(Leaf()).eval()
    check = watch(model)
    with pytest.raises(ts.NodeCompileError) as info:
        ts.script(model, freeze=True)
    err = info.value
    assert err.path == "" and err.strategy == "script"
    assert "'<root>'" in str(err)
    assert "torch.jit.freeze failed on the compiled root: RuntimeError: cannot freeze this graph" in str(err)
    assert isinstance(err.__cause__, RuntimeError)
    check()
