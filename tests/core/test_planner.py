"""The planner: claim resolution errors, plan-time validation, shared modules, rules, arguments."""

from __future__ import annotations

import warnings

import pytest
import torch
from modules import Leaf, ScriptedLeaf, TracedLeaf

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


# --------------------------------------------------------------------------
# tiny modules
# --------------------------------------------------------------------------


@ts.compile_mode("unsupported")
class Bad(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + len({id(self): 1, None: 2})  # Python-only code


class BadWithChild(Bad):
    def __init__(self) -> None:
        super().__init__()
        self.inner = ScriptedLeaf()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 3


class Two(torch.nn.Module):
    def __init__(self, left: torch.nn.Module, right: torch.nn.Module) -> None:
        super().__init__()
        self.left = left
        self.right = right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.right(self.left(x))


class One(torch.nn.Module):
    def __init__(self, child: torch.nn.Module) -> None:
        super().__init__()
        self.child = child

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.child(x) - 1


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Claimer:
    """A test plugin claiming every module of ``cls`` for ``strategy`` with ``kind``."""

    def __init__(self, name: str, cls: type, strategy: str, kind: str = "rule") -> None:
        self.name = name
        self.cls = cls
        self.strategy = strategy
        self.kind = kind

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        if isinstance(module, self.cls):
            return ts.Claim(self.strategy, self.kind, f"plugin {self.name}", "test claim")
        return None


class CompileSpy:
    """Records torch.jit.script / trace_module calls and every node compiled."""

    name = "compile-spy"

    def __init__(self, monkeypatch) -> None:
        self.jit_calls: list[str] = []
        self.compiled: list[str] = []
        real_script, real_trace = torch.jit.script, torch.jit.trace_module

        def script(obj, *a, **kw):
            self.jit_calls.append(f"script {type(obj).__qualname__}")
            return real_script(obj, *a, **kw)

        def trace_module(mod, *a, **kw):
            self.jit_calls.append(f"trace {type(mod).__qualname__}")
            return real_trace(mod, *a, **kw)

        monkeypatch.setattr(torch.jit, "script", script)
        monkeypatch.setattr(torch.jit, "trace_module", trace_module)

    @ts.hookimpl
    def torchstitch_prepare(self, module, node, strategy):
        self.compiled.append(node.path)
        return None

    @ts.hookimpl
    def torchstitch_node_compiled(self, node, original, compiled, seconds):
        self.compiled.append(f"done {node.path}")


# --------------------------------------------------------------------------
# ambiguous and unknown claims
# --------------------------------------------------------------------------


class TestAmbiguous:
    def test_two_plugins_same_kind_different_strategies(self, watch):
        model = Two(Leaf(), Leaf())
        check = watch(model)
        plugins = [Claimer("alpha", Leaf, "script"), Claimer("beta", Leaf, "trace")]
        with pytest.raises(ts.AmbiguousClaimError) as info:
            ts.compile(model, example_inputs=(torch.randn(2, 4),), plugins=plugins)
        assert type(info.value) is ts.AmbiguousClaimError
        text = str(info.value)
        assert "at 'left'" in text
        assert "plugin alpha" in text and "plugin beta" in text
        assert "'script'" in text and "'trace'" in text
        assert "rule" in text  # the kind that disagrees
        assert "Rule(" in text and "path='left'" in text  # the settling rule
        assert info.value.path == "left"
        check()

    def test_suggested_rule_settles_it(self, watch):
        model = Two(Leaf(), Leaf())
        check = watch(model)
        plugins = [Claimer("alpha", Leaf, "script"), Claimer("beta", Leaf, "trace")]
        x = torch.randn(2, 4)
        rules = [ts.Rule("script", type=Leaf)]
        plan = ts.plan(model, rules=rules, plugins=plugins)
        assert plan["left"].claim.kind is ts.ClaimKind.OVERRIDE
        assert {c.claimant for c in plan["left"].offers[1:]} == {"plugin alpha", "plugin beta"}
        compiled = ts.compile(model, example_inputs=(x,), rules=rules, plugins=plugins)
        assert isinstance(compiled.left, torch.jit.ScriptModule)
        torch.testing.assert_close(compiled(x), model(x))
        check()

    def test_root_ambiguity_names_root(self):
        plugins = [
            Claimer("alpha", Leaf, "script", "attribute"),
            Claimer("beta", Leaf, "trace", "attribute"),
        ]
        with pytest.raises(ts.AmbiguousClaimError) as info:
            ts.plan(Leaf(), plugins=plugins)
        text = str(info.value)
        assert "<root>" in text
        assert "path=''" in text
        assert "attribute" in text

    def test_same_strategy_same_kind_is_not_ambiguous(self):
        plugins = [Claimer("alpha", Leaf, "script"), Claimer("beta", Leaf, "script")]
        node = ts.plan(One(Leaf()), plugins=plugins)["child"]
        assert node.claim.strategy == "script"
        assert len(node.offers) == 2

    def test_weaker_disagreement_is_settled_by_stronger_claim(self):
        plugins = [Claimer("alpha", Leaf, "script"), Claimer("beta", Leaf, "trace")]
        node = ts.plan(One(ScriptedLeaf()), plugins=plugins)["child"]
        assert node.claim.kind is ts.ClaimKind.DECORATOR
        assert node.claim.strategy == "script"


def known_strategies(message: str) -> list[str]:
    """The names listed after "known strategies: " (plugins may add more than the built-ins)."""
    return message.split("known strategies: ", 1)[1].split(";")[0].split(", ")


class TestUnknownStrategy:
    def test_rule_naming_unknown_strategy(self, watch):
        model = One(Leaf())
        check = watch(model)
        with pytest.raises(ts.UnknownStrategyError) as info:
            ts.compile(model, rules=[ts.Rule("scirpt", path="child")])
        assert type(info.value) is ts.UnknownStrategyError
        assert isinstance(info.value, ValueError)
        text = str(info.value)
        assert "'scirpt'" in text
        assert {"'script'", "'trace'", "'unsupported'"} <= set(known_strategies(text))
        assert "rules[0]" in text
        check()

    def test_plugin_claim_naming_unknown_strategy(self, watch):
        model = Two(Leaf(), torch.nn.ReLU())
        check = watch(model)
        with pytest.raises(ts.UnknownStrategyError) as info:
            ts.compile(model, plugins=[Claimer("gamma", torch.nn.ReLU, "onnx")])
        text = str(info.value)
        assert "at 'right'" in text
        assert "'onnx'" in text
        assert "plugin gamma" in text
        assert {"'script'", "'trace'", "'unsupported'"} <= set(known_strategies(text))
        assert info.value.path == "right"
        check()


# --------------------------------------------------------------------------
# plan-time validation
# --------------------------------------------------------------------------


class TestUnsupportedInsideRegion:
    def test_script_parent_raises_before_any_compile(self, monkeypatch, watch):
        # a script-decorated sibling comes first in post-order: had compilation started
        # before validation, it would have been scripted already
        model = Two(ScriptedLeaf(), One(Bad()))
        check = watch(model)
        spy = CompileSpy(monkeypatch)
        with pytest.raises(ts.UnsupportedModuleError) as info:
            ts.script(model, plugins=[spy])
        err = info.value
        assert isinstance(err, NotImplementedError)
        assert isinstance(err, ts.PlanError)
        text = str(err)
        assert "at 'right.child'" in text
        assert "'unsupported'" in text
        assert f"@compile_mode on {_qualname(Bad)}" in text
        assert "<root>" in text  # the region it sits in
        assert err.path == "right.child"
        assert spy.jit_calls == []
        assert spy.compiled == []
        check()

    def test_plan_raises_too(self):
        with pytest.raises(ts.UnsupportedModuleError, match="'child'"):
            ts.plan(One(Bad()), rules=[ts.Rule("script", path="")])

    def test_traced_parent(self, monkeypatch, watch):
        model = One(Bad())
        check = watch(model)
        spy = CompileSpy(monkeypatch)
        with pytest.raises(NotImplementedError) as info:
            ts.trace(model, (torch.randn(2, 4),), plugins=[spy])
        assert type(info.value) is ts.UnsupportedModuleError
        assert "at 'child'" in str(info.value)
        assert spy.jit_calls == [] and spy.compiled == []
        check()

    def test_region_of_a_compiled_child(self, monkeypatch):
        # unsupported inside a region rooted below the root
        model = One(Two(Leaf(), Bad()))
        spy = CompileSpy(monkeypatch)
        with pytest.raises(ts.UnsupportedModuleError) as info:
            ts.compile(model, rules=[ts.Rule("script", path="child")], plugins=[spy])
        assert "at 'child.right'" in str(info.value)
        assert "rooted at child" in str(info.value)
        assert spy.jit_calls == []


class FakeExport:
    """Registers strategy ``fake_export`` (family ``export``) that records and wraps."""

    name = "fake-export"

    def __init__(self) -> None:
        self.calls: list[str] = []

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile(module, context):
            self.calls.append(context.node.path)
            return torch.jit.script(module)

        return [ts.Strategy(name="fake_export", family="export", compile=compile)]


class TestContainment:
    def test_export_child_under_script_parent(self, monkeypatch, watch):
        model = Two(ScriptedLeaf(), One(Leaf()))
        check = watch(model)
        fake = FakeExport()
        spy = CompileSpy(monkeypatch)
        with pytest.raises(ts.PlanError) as info:
            ts.script(model, rules=[ts.Rule("fake_export", path="right.child")], plugins=[fake, spy])
        err = info.value
        assert type(err) is ts.PlanError
        assert not isinstance(err, NotImplementedError)
        text = str(err)
        assert "at 'right.child'" in text
        assert "'fake_export'" in text
        assert "'export'" in text
        assert "'script' region" in text
        assert "torchscript" in text  # what the region can contain
        assert fake.calls == [] and spy.jit_calls == [] and spy.compiled == []
        check()

    def test_export_node_outside_any_region_compiles(self, watch):
        model = Two(ScriptedLeaf(), One(Leaf()))
        check = watch(model)
        fake = FakeExport()
        x = torch.randn(3, 4)
        rules = [ts.Rule("fake_export", path="right.child")]
        plan = ts.plan(model, rules=rules, plugins=[fake])
        assert plan["right.child"].region == "right.child"
        assert plan["right"].region is None
        compiled = ts.compile(model, example_inputs=(x,), rules=rules, plugins=[fake])
        assert fake.calls == ["right.child"]
        assert isinstance(compiled.left, torch.jit.ScriptModule)
        assert isinstance(compiled.right.child, torch.jit.ScriptModule)
        torch.testing.assert_close(compiled(x), model(x))
        check()

    def test_script_child_under_export_parent_is_allowed(self):
        # fake_export has can_contain=None: it can hold any family
        model = One(ScriptedLeaf())
        plan = ts.plan(model, rules=[ts.Rule("fake_export", path="")], plugins=[FakeExport()])
        assert plan[""].region == ""
        assert plan["child"].region == "child"
        assert plan["child.lin"].region == "child"


class TestUnsupportedOutsideRegion:
    def test_left_in_python(self, watch):
        model = Two(ScriptedLeaf(), Bad())
        check = watch(model)
        plan = ts.plan(model)
        assert plan["right"].strategy == "unsupported"
        assert plan["right"].region is None
        assert plan[""].region is None
        assert plan["left"].region == "left"
        x = torch.randn(3, 4)
        compiled = ts.compile(model, example_inputs=(x,))
        assert isinstance(compiled.left, torch.jit.ScriptModule)
        assert type(compiled.right) is type(model.right) and compiled.right is not model.right
        assert not isinstance(compiled, torch.jit.ScriptModule)
        torch.testing.assert_close(compiled(x), model(x))
        check()

    def test_unsupported_parent_with_compiled_child(self, watch):
        model = One(BadWithChild())
        check = watch(model)
        plan = ts.plan(model)
        assert plan["child"].region is None
        assert plan["child.inner"].region == "child.inner"
        x = torch.randn(3, 4)
        compiled = ts.compile(model, example_inputs=(x,))
        assert type(compiled.child) is BadWithChild
        assert compiled.child is not model.child
        assert isinstance(compiled.child.inner, torch.jit.ScriptModule)
        assert type(model.child.inner) is ScriptedLeaf
        torch.testing.assert_close(compiled(x), model(x))
        check()


# --------------------------------------------------------------------------
# shared modules and cycles
# --------------------------------------------------------------------------


class TestShared:
    def test_second_path_is_shared_with_the_first(self):
        leaf = Leaf()
        plan = ts.plan(Two(leaf, leaf))
        assert plan["left"].shared_with is None
        assert plan["right"].shared_with == "left"
        assert plan["right"].children == ()  # not walked twice
        assert "left.lin" in plan and "right.lin" not in plan

    def test_shared_module_compiled_once_and_stitched_at_both(self, watch):
        leaf = ScriptedLeaf()
        model = Two(leaf, leaf)
        check = watch(model)
        plan = ts.plan(model)
        assert plan["right"].strategy == "script"
        assert plan["right"].shared_with == "left"
        x = torch.randn(3, 4)
        compiled = ts.compile(model, example_inputs=(x,))
        assert isinstance(compiled.left, torch.jit.ScriptModule)
        assert compiled.left is compiled.right
        torch.testing.assert_close(compiled(x), model(x))
        check()

    def test_conflicting_overrides_name_both_paths(self, watch):
        leaf = Leaf()
        model = Two(leaf, leaf)
        check = watch(model)
        rules = [ts.Rule("script", path="left"), ts.Rule("trace", path="right")]
        with pytest.raises(ts.PlanError) as info:
            ts.compile(model, example_inputs=(torch.randn(2, 4),), rules=rules)
        err = info.value
        assert type(err) is ts.PlanError
        text = str(err)
        assert "shared by paths left" in text
        assert "and right" in text
        assert "'script'" in text and "'trace'" in text
        assert err.path == "right"
        check()

    def test_claimed_at_one_path_only(self):
        leaf = Leaf()
        with pytest.raises(ts.PlanError, match="shared by paths left .*inherits"):
            ts.plan(Two(leaf, leaf), rules=[ts.Rule("script", path="left")])

    def test_cycle(self):
        model = One(Leaf())
        model.child.back = model  # the root is its own descendant
        with pytest.raises(ts.PlanError, match="contains itself") as info:
            ts.plan(model)
        assert "at 'child.back'" in str(info.value)


# --------------------------------------------------------------------------
# recurse, rules, arguments
# --------------------------------------------------------------------------


class TestRecurse:
    def test_recurse_false_ignores_descendant_claims(self):
        model = One(ScriptedLeaf())
        plugins = [Claimer("delta", torch.nn.Linear, "trace")]
        deep = ts.plan(model, rules=[ts.Rule("script", path="")], plugins=plugins)
        assert deep["child"].strategy == "script"
        assert deep["child.lin"].strategy == "trace"
        shallow = ts.plan(model, rules=[ts.Rule("script", path="")], recurse=False, plugins=plugins)
        assert shallow[""].strategy == "script"
        for path in ("child", "child.lin"):
            assert shallow[path].claim is None
            assert shallow[path].offers == ()
            assert shallow[path].region == ""

    def test_recurse_false_root_claims_still_count(self):
        plan = ts.plan(ScriptedLeaf(), recurse=False)
        assert plan[""].strategy == "script"
        assert plan["lin"].claim is None

    def test_recurse_false_compiles_root_as_a_whole(self, watch):
        # recursively, the trace-decorated child needs tracing inputs nobody has
        model = One(TracedLeaf())
        check = watch(model)
        with pytest.raises(ts.TracingInputsError, match="'child'"):
            ts.script(model)
        check()
        compiled = ts.script(model, recurse=False)
        assert isinstance(compiled, torch.jit.ScriptModule)
        x = torch.randn(3, 4)
        torch.testing.assert_close(compiled(x), model(x))
        check()


class TestRuleWarnings:
    def test_rule_matching_nothing_warns(self):
        model = One(Leaf())
        with pytest.warns(ts.TorchstitchWarning) as record:
            plan = ts.plan(model, rules=[ts.Rule("script", path="nothing.here")])
        messages = [str(w.message) for w in record if issubclass(w.category, ts.TorchstitchWarning)]
        assert len(messages) == 1
        assert "Rule('script', path='nothing.here')" in messages[0]
        assert "matched no module" in messages[0]
        assert all(n.claim is None for n in plan.walk())

    def test_matching_rule_does_not_warn(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ts.TorchstitchWarning)
            plan = ts.plan(One(Leaf()), rules=[ts.Rule("script", path="child")])
        assert plan["child"].strategy == "script"

    @pytest.mark.parametrize("call", ["plan", "compile"])
    def test_warning_points_at_the_caller(self, call):
        model = One(Leaf())
        with pytest.warns(ts.TorchstitchWarning, match="matched no module") as record:
            getattr(ts, call)(model, rules=[ts.Rule("script", type=torch.nn.Conv1d)])
        # compile also warns that nothing was compiled (nothing is claimed): at the caller too
        assert [w.filename for w in record if "matched no module" in str(w.message)] == [__file__]
        assert {w.filename for w in record} == {__file__}

    def test_single_rule_not_in_a_list(self):
        plan = ts.plan(One(Leaf()), rules=ts.Rule("script", path="child"))
        assert plan["child"].strategy == "script"

    def test_rules_must_be_rules(self):
        with pytest.raises(TypeError, match=r"rules\[1\]"):
            ts.plan(One(Leaf()), rules=[ts.Rule("script", path="child"), "trace"])


class TestArguments:
    @pytest.mark.parametrize("fn", [ts.plan, ts.compile, ts.script])
    def test_non_module(self, fn):
        with pytest.raises(TypeError, match="torch.nn.Module.*builtins.dict"):
            fn({"weight": torch.ones(2)})

    def test_function_is_not_a_module(self):
        with pytest.raises(TypeError, match="torch.nn.Module"):
            ts.compile(torch.relu)

    def test_inputs_naming_unknown_path(self, watch):
        model = One(TracedLeaf())
        check = watch(model)
        x = torch.randn(2, 4)
        with pytest.raises(ts.PlanError) as info:
            ts.compile(model, inputs={"chld": (x,)})
        err = info.value
        assert type(err) is ts.PlanError
        text = str(err)
        assert "at 'chld'" in text
        assert "'child'" in text and "'child.lin'" in text  # the known paths
        assert err.path == "chld"
        check()
        with pytest.raises(ts.PlanError, match="'chld'"):
            ts.plan(model, inputs={"chld": (x,)})
        # the right path works
        compiled = ts.compile(model, inputs={"child": (x,)})
        assert isinstance(compiled.child, torch.jit.ScriptModule)
        torch.testing.assert_close(compiled(x), model(x))
        check()
