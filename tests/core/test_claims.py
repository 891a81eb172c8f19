"""Claims: @compile_mode, set/get_compile_mode, Claim/ClaimKind, Rule, and claim precedence."""

from __future__ import annotations

import attrs
import pytest
import torch
from modules import Leaf

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


# --------------------------------------------------------------------------
# tiny modules
# --------------------------------------------------------------------------


class Pair(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = Leaf()
        self.second = Leaf()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


@ts.compile_mode("script")
class ScriptBase(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


@ts.compile_mode("trace")
class TraceChild(ScriptBase):
    pass


class TraceGrandchild(TraceChild):
    pass


@ts.compile_mode(None)
class Cancelled(ScriptBase):
    pass


@ts.compile_mode("trace")
class TraceMixin(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class Diamond(TraceMixin, ScriptBase):
    """MRO: Diamond, TraceMixin, ScriptBase, Module: TraceMixin is nearer."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------
# @compile_mode / set_compile_mode / get_compile_mode
# --------------------------------------------------------------------------


class TestCompileModeDecorator:
    def test_rejects_non_module_class(self):
        class NotAModule:
            pass

        with pytest.raises(TypeError, match="torch.nn.Module"):
            ts.compile_mode("script")(NotAModule)
        assert not hasattr(NotAModule, "__torchstitch_compile_mode__")

    def test_rejects_function(self):
        def forward(x):
            return x

        with pytest.raises(TypeError, match="torch.nn.Module"):
            ts.compile_mode("trace")(forward)

    def test_rejects_module_instance(self):
        with pytest.raises(TypeError):
            ts.compile_mode("script")(torch.nn.Linear(2, 2))

    def test_unknown_mode_lists_valid_modes(self):
        with pytest.raises(ValueError) as info:
            ts.compile_mode("scirpt")
        text = str(info.value)
        assert "'scirpt'" in text
        for mode in ("'script'", "'trace'", "'unsupported'", "None"):
            assert mode in text

    def test_non_string_mode_is_type_error(self):
        with pytest.raises(TypeError, match="valid modes"):
            ts.compile_mode(3)

    @pytest.mark.parametrize("mode", ["script", "trace", "unsupported", None])
    def test_builtin_modes_accepted(self, mode):
        @ts.compile_mode(mode)
        class M(torch.nn.Module):
            pass

        assert ts.get_compile_mode(M()) == mode

    def test_decorator_returns_the_class(self):
        class M(torch.nn.Module):
            pass

        assert ts.compile_mode("script")(M) is M

    def test_nearest_in_mro_wins(self):
        assert ts.get_compile_mode(ScriptBase()) == "script"
        assert ts.get_compile_mode(TraceChild()) == "trace"
        # not decorated itself: the nearest decorated base (TraceChild) wins over ScriptBase
        assert ts.get_compile_mode(TraceGrandchild()) == "trace"
        assert ts.get_compile_mode(Diamond()) == "trace"

    def test_nearest_in_mro_names_the_decorated_class_as_claimant(self):
        plan = ts.plan(TraceGrandchild())
        claim = plan[""].claim
        assert claim.strategy == "trace"
        assert claim.kind is ts.ClaimKind.DECORATOR
        assert claim.claimant == f"@compile_mode on {_qualname(TraceChild)}"

    def test_none_cancels_inherited_mode(self):
        assert ts.get_compile_mode(Cancelled()) is None
        node = ts.plan(Cancelled())[""]
        assert node.claim is None
        assert node.offers == ()
        assert node.claim_kind is ts.ClaimKind.DEFAULT

    def test_subclass_decoration_does_not_change_base(self):
        assert ts.get_compile_mode(ScriptBase()) == "script"
        assert ts.plan(ScriptBase())[""].claim.claimant == f"@compile_mode on {_qualname(ScriptBase)}"

    def test_undecorated_module(self):
        assert ts.get_compile_mode(torch.nn.Linear(2, 2)) is None


class TestSetCompileMode:
    def test_instance_beats_class(self):
        inst = ScriptBase()
        other = ScriptBase()
        ts.set_compile_mode(inst, "trace")
        assert ts.get_compile_mode(inst) == "trace"
        assert ts.get_compile_mode(other) == "script"  # only that instance
        claim = ts.plan(inst)[""].claim
        assert claim.strategy == "trace"
        assert claim.kind is ts.ClaimKind.DECORATOR
        assert claim.claimant == "set_compile_mode on the instance"

    def test_instance_none_inherits_despite_class(self):
        inst = ScriptBase()
        ts.set_compile_mode(inst, None)
        assert ts.get_compile_mode(inst) is None
        assert ts.plan(inst)[""].claim is None

    def test_instance_mode_on_undecorated_class(self):
        lin = torch.nn.Linear(2, 2)
        ts.set_compile_mode(lin, "script")
        assert ts.get_compile_mode(lin) == "script"
        assert ts.get_compile_mode(torch.nn.Linear(2, 2)) is None
        assert not hasattr(torch.nn.Linear, "__torchstitch_compile_mode__")

    def test_set_compile_mode_compiles_the_instance(self):
        model = Pair()
        ts.set_compile_mode(model.first, "script")
        x = torch.randn(3, 4)
        compiled = ts.compile(model, example_inputs=(x,))
        assert isinstance(compiled.first, torch.jit.ScriptModule)
        assert not isinstance(compiled.second, torch.jit.ScriptModule)
        torch.testing.assert_close(compiled(x), model(x))

    def test_rejects_non_module(self):
        with pytest.raises(TypeError, match="torch.nn.Module"):
            ts.set_compile_mode(object(), "script")

    def test_rejects_unknown_mode_and_leaves_module_alone(self):
        inst = ScriptBase()
        with pytest.raises(ValueError, match="valid modes"):
            ts.set_compile_mode(inst, "bogus")
        assert ts.get_compile_mode(inst) == "script"
        assert "__torchstitch_compile_mode__" not in inst.__dict__


# --------------------------------------------------------------------------
# Claim / ClaimKind
# --------------------------------------------------------------------------


class TestClaimKind:
    def test_order_strongest_first(self):
        K = ts.ClaimKind
        assert K.OVERRIDE > K.DECORATOR > K.ATTRIBUTE > K.RULE > K.DEFAULT
        assert sorted(K, reverse=True) == [K.OVERRIDE, K.DECORATOR, K.ATTRIBUTE, K.RULE, K.DEFAULT]

    def test_str_is_lowercase_name(self):
        assert str(ts.ClaimKind.OVERRIDE) == "override"
        assert str(ts.ClaimKind.DEFAULT) == "default"


class TestClaim:
    def test_kind_from_string(self):
        claim = ts.Claim("script", "rule", "plugin x", "because")
        assert claim.kind is ts.ClaimKind.RULE
        assert claim.to_dict() == {
            "strategy": "script",
            "kind": "rule",
            "claimant": "plugin x",
            "reason": "because",
            "portable": False,
        }

    def test_kind_case_insensitive(self):
        assert ts.Claim("trace", "Attribute", "p").kind is ts.ClaimKind.ATTRIBUTE

    def test_unknown_kind(self):
        with pytest.raises(ValueError, match="valid kinds: default, rule, attribute, decorator, override"):
            ts.Claim("script", "strong", "p")

    def test_strategy_and_claimant_must_be_str(self):
        with pytest.raises(TypeError):
            ts.Claim(None, ts.ClaimKind.RULE, "p")
        with pytest.raises(TypeError):
            ts.Claim("script", ts.ClaimKind.RULE, 42)

    def test_frozen_and_comparable(self):
        a = ts.Claim("script", ts.ClaimKind.RULE, "p")
        assert a == ts.Claim("script", "rule", "p")
        assert a != ts.Claim("trace", "rule", "p")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            a.strategy = "trace"


# --------------------------------------------------------------------------
# Rule validation and glob semantics
# --------------------------------------------------------------------------


class TestRuleValidation:
    def test_no_condition(self):
        with pytest.raises(ts.PlanError, match="no condition"):
            ts.Rule("script")

    @pytest.mark.parametrize("glob", ["a..b", "a.[b", "a.b]", ".a", "a.", "a.**b", "**x", "a.[]", "a.[!]"])
    def test_malformed_globs(self, glob):
        with pytest.raises(ts.PlanError) as info:
            ts.Rule("script", path=glob)
        assert repr(glob) in str(info.value)

    def test_type_must_be_class(self):
        with pytest.raises(TypeError, match="type="):
            ts.Rule("script", type="Linear")
        with pytest.raises(TypeError, match="type="):
            ts.Rule("script", type=(torch.nn.Linear, 3))
        with pytest.raises(TypeError, match="type="):
            ts.Rule("script", type=())
        with pytest.raises(TypeError, match="type="):
            ts.Rule("script", type=torch.nn.Linear(2, 2))

    def test_where_must_be_callable(self):
        with pytest.raises(TypeError, match="where="):
            ts.Rule("script", where=True)

    def test_path_must_be_str(self):
        with pytest.raises(TypeError, match="path="):
            ts.Rule("script", path=0)

    def test_rules_compare_by_what_they_say_not_by_their_compiled_glob(self):
        rule = ts.Rule("script", path="layers.*")
        same = ts.Rule("script", path="layers.*")
        assert rule == same and hash(rule) == hash(same)
        assert rule != ts.Rule("script", path="layers.**")
        assert rule.matches(Leaf(), "layers.0") and not rule.matches(Leaf(), "layers.0.lin")
        assert repr(rule) == "Rule('script', path='layers.*')"

    def test_strategy_must_be_str_or_none(self):
        with pytest.raises(TypeError):
            ts.Rule(1, path="a")
        assert ts.Rule(None, path="a").strategy is None

    def test_type_tuple_and_conjunction(self):
        rule = ts.Rule("script", type=(torch.nn.Linear, torch.nn.ReLU), path="a.*")
        assert rule.matches(torch.nn.Linear(1, 1), "a.x")
        assert rule.matches(torch.nn.ReLU(), "a.y")
        assert not rule.matches(torch.nn.Tanh(), "a.x")  # type fails
        assert not rule.matches(torch.nn.Linear(1, 1), "b.x")  # path fails

    def test_where_receives_module_and_path(self):
        seen = []

        def where(module, path):
            seen.append((type(module), path))
            return path.endswith("second")

        rule = ts.Rule("script", where=where)
        assert rule.matches(Leaf(), "second")
        assert not rule.matches(Leaf(), "first")
        assert seen == [(Leaf, "second"), (Leaf, "first")]

    def test_describe(self):
        rule = ts.Rule("trace", type=torch.nn.Linear, path="layers.*")
        assert repr(rule) == "Rule('trace', type=torch.nn.modules.linear.Linear, path='layers.*')"


def _matches(glob: str, path: str) -> bool:
    return ts.Rule("script", path=glob).matches(torch.nn.Identity(), path)


class TestGlob:
    @pytest.mark.parametrize(
        "glob, path, expected",
        [
            # * within one component
            ("layers.*", "layers.0", True),
            ("layers.*", "layers.10", True),
            ("layers.*", "layers", False),
            ("layers.*", "layers.0.tp", False),
            ("layers.*.tp", "layers.3.tp", True),
            ("layers.*.tp", "layers.3.x.tp", False),
            ("lay*", "layers", True),
            ("lay*", "layers.0", False),
            ("*", "a", True),
            ("*", "a.b", False),
            # ** across components, including zero
            ("layers.**", "layers", True),
            ("layers.**", "layers.0", True),
            ("layers.**", "layers.0.tp.lin", True),
            ("layers.**", "layersX", False),
            ("**.tp", "tp", True),
            ("**.tp", "layers.0.tp", True),
            ("**.tp", "layers.0.tpx", False),
            ("**.tp", "xtp", False),
            ("a.**.b", "a.b", True),
            ("a.**.b", "a.x.b", True),
            ("a.**.b", "a.x.y.b", True),
            ("a.**.b", "a.xb", False),
            ("a.**.b", "ab", False),
            ("**", "", True),
            ("**", "a.b.c", True),
            # "" is the root only
            ("", "", True),
            ("", "a", False),
            # exact
            ("a.b", "a.b", True),
            ("a.b", "a.b.c", False),
            ("a.b", "xa.b", False),
            # character classes and ?
            ("[ab]x", "ax", True),
            ("[ab]x", "bx", True),
            ("[ab]x", "cx", False),
            ("[!ab]x", "cx", True),
            ("[!ab]x", "ax", False),
            ("layers.[0-2]", "layers.1", True),
            ("layers.[0-2]", "layers.5", False),
            ("l?", "l1", True),
            ("l?", "l12", False),
            ("l?", "l", False),
            # dots and regex metacharacters are literal
            ("a+b", "a+b", True),
            ("a+b", "aab", False),
        ],
    )
    def test_glob(self, glob, path, expected):
        assert _matches(glob, path) is expected

    def test_star_is_one_component_not_the_root(self):
        # `*` is exactly one component; the root ("" , zero components) is matched by "" only
        assert not _matches("*", "")

    def test_glob_selects_nodes_in_plan(self):
        class Stack(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.layers = torch.nn.ModuleList([Leaf(), Leaf(), Leaf()])

        plan = ts.plan(Stack(), rules=[ts.Rule("script", path="layers.[02]")])
        assert plan["layers.0"].strategy == "script"
        assert plan["layers.1"].strategy is None
        assert plan["layers.1"].region is None
        assert plan["layers.2"].strategy == "script"
        assert plan["layers.2.lin"].region == "layers.2"


# --------------------------------------------------------------------------
# precedence of the five claim kinds
# --------------------------------------------------------------------------


class Target(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * 2


class Holder(torch.nn.Module):
    def __init__(self, child: torch.nn.Module) -> None:
        super().__init__()
        self.child = child

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.child(x) + 1


class Recorder:
    """Registers strategies ``s_<kind>`` that script the module and record which paths they compiled."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def _make(self, strategy_name: str) -> ts.Strategy:
        def compile(module, context):
            self.calls.append((strategy_name, context.node.path))
            return torch.jit.script(module)

        return ts.Strategy(name=strategy_name, family="torchscript", compile=compile)

    @ts.hookimpl
    def torchstitch_strategies(self):
        return [self._make(f"s_{k}") for k in ("override", "decorator", "attribute", "rule")]


class AttributeClaimer:
    name = "attribute-claimer"

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        if isinstance(module, Target):
            return ts.Claim("s_attribute", ts.ClaimKind.ATTRIBUTE, "plugin attribute-claimer")
        return None


class RuleClaimer:
    name = "rule-claimer"

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        if isinstance(module, Target):
            return ts.Claim("s_rule", ts.ClaimKind.RULE, "plugin rule-claimer", "every Target")
        return None


def _target(decorated: bool) -> Target:
    t = Target()
    if decorated:
        ts.set_compile_mode(t, "s_decorator")
    return t


class TestPrecedence:
    @pytest.fixture(autouse=True)
    def _decorator_strategy_known(self, monkeypatch):
        # set_compile_mode checks plugin strategy names against the default manager;
        # make "s_decorator" known there without touching the default manager
        from torchstitch.core import modes

        builtin = modes.builtin_modes()
        monkeypatch.setattr(modes, "builtin_modes", lambda: (*builtin, "s_decorator"))

    @pytest.mark.parametrize(
        "override, decorator, attribute, rule, expected",
        [
            (False, False, False, False, None),
            (False, False, False, True, ("s_rule", ts.ClaimKind.RULE)),
            (False, False, True, True, ("s_attribute", ts.ClaimKind.ATTRIBUTE)),
            (False, True, True, True, ("s_decorator", ts.ClaimKind.DECORATOR)),
            (True, True, True, True, ("s_override", ts.ClaimKind.OVERRIDE)),
            (True, False, False, True, ("s_override", ts.ClaimKind.OVERRIDE)),
            (False, True, False, True, ("s_decorator", ts.ClaimKind.DECORATOR)),
            (False, False, True, False, ("s_attribute", ts.ClaimKind.ATTRIBUTE)),
        ],
    )
    def test_strongest_kind_wins(self, override, decorator, attribute, rule, expected, watch):
        recorder = Recorder()
        plugins = [recorder]
        if attribute:
            plugins.append(AttributeClaimer())
        if rule:
            plugins.append(RuleClaimer())
        rules = [ts.Rule("s_override", path="child")] if override else []
        model = Holder(_target(decorator))
        check = watch(model)

        plan = ts.plan(model, rules=rules, plugins=plugins)
        node = plan["child"]
        offered_kinds = [c.kind for c in node.offers]
        assert offered_kinds == sorted(offered_kinds, reverse=True)  # strongest first
        assert len(node.offers) == sum((override, decorator, attribute, rule))
        if expected is None:
            assert node.claim is None
            assert node.claim_kind is ts.ClaimKind.DEFAULT
            assert node.region is None
        else:
            assert (node.claim.strategy, node.claim.kind) == expected
            assert node.claim_kind is expected[1]
            assert node.region == "child"

        x = torch.randn(2, 4)
        compiled = ts.compile(model, rules=rules, plugins=plugins, example_inputs=(x,))
        torch.testing.assert_close(compiled(x), model(x))
        if expected is None:
            assert recorder.calls == []
            # nothing compiled: still a model of its own, sharing the caller's weights
            assert compiled is not model and type(compiled) is type(model)
            assert compiled.child.lin.weight is model.child.lin.weight
        else:
            assert recorder.calls == [(expected[0], "child")]
            assert isinstance(compiled.child, torch.jit.ScriptModule)
        check()

    @pytest.mark.filterwarnings("ignore::torchstitch.TorchstitchWarning")  # shadowed rules
    def test_first_matching_override_rule_wins(self):
        model = Holder(Target())
        rules = [
            ts.Rule("s_override", path="child"),
            ts.Rule("s_rule", type=Target),
            ts.Rule("s_attribute", type=torch.nn.Linear),
        ]
        plan = ts.plan(model, rules=rules, plugins=[Recorder()])
        assert plan["child"].claim.strategy == "s_override"
        assert plan["child"].claim.claimant.startswith("rules[0]")
        # only the first matching rule is offered, not the later ones
        assert [c.strategy for c in plan["child"].offers] == ["s_override"]
        assert plan["child.lin"].claim.strategy == "s_attribute"
        assert plan["child.lin"].claim.claimant.startswith("rules[2]")

        reordered = ts.plan(model, rules=[rules[1], rules[0]], plugins=[Recorder()])
        assert reordered["child"].claim.strategy == "s_rule"
        assert reordered["child"].claim.claimant.startswith("rules[0]")

    @pytest.mark.filterwarnings("ignore::torchstitch.TorchstitchWarning")  # shadowed rule
    def test_override_rules_do_not_conflict_with_each_other(self):
        # two matching override rules with different strategies: the first wins, no ambiguity
        model = Holder(Target())
        plan = ts.plan(
            model,
            rules=[ts.Rule("s_rule", type=Target), ts.Rule("s_override", path="child")],
            plugins=[Recorder()],
        )
        assert plan["child"].claim.strategy == "s_rule"

    @pytest.mark.filterwarnings("ignore::torchstitch.TorchstitchWarning")  # shadowed rule
    def test_rule_none_forces_inherit(self):
        model = Holder(_target(decorated=True))
        plugins = [Recorder(), AttributeClaimer(), RuleClaimer()]
        rules = [ts.Rule(None, path="child"), ts.Rule("s_override", path="child")]
        plan = ts.plan(model, rules=rules, plugins=plugins)
        node = plan["child"]
        assert node.claim is None
        assert node.region is None  # nothing above compiles it: stays in Python
        # the other offers are still recorded for explanations; the later rule never matched
        assert [c.strategy for c in node.offers] == ["s_decorator", "s_attribute", "s_rule"]

        scripted = ts.plan(model, rules=[ts.Rule("s_override", path=""), *rules], plugins=plugins)
        assert scripted["child"].claim is None
        assert scripted["child"].region == ""

    def test_rule_none_child_compiles_inside_parent(self, watch):
        # a trace-decorated child without tracing inputs would fail on its own;
        # Rule(None) makes it part of the scripted parent instead
        @ts.compile_mode("trace")
        class NeedsInputs(Target):
            pass

        model = Holder(NeedsInputs())
        check = watch(model)
        with pytest.raises(ts.TracingInputsError, match="'child'"):
            ts.script(model)
        check()
        compiled = ts.script(model, rules=[ts.Rule(None, path="child")])
        assert isinstance(compiled, torch.jit.ScriptModule)
        x = torch.randn(3, 4)
        torch.testing.assert_close(compiled(x), model(x))
        check()
