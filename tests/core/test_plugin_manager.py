"""The plugin manager: built-ins as plugins, third-party strategies, autoload, fault isolation."""

from __future__ import annotations

import attrs
import pytest
import torch
from modules import Leaf, ScriptedLeaf, TracedLeaf

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class Looping(torch.nn.Module):
    """Data-dependent control flow: only scripting keeps both branches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(2):
            if bool(x.sum() > 0):
                x = x - 1.0
            else:
                x = x * 2.0
        return x


class Model(torch.nn.Module):
    def __init__(self, a: torch.nn.Module, b: torch.nn.Module) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([a, b])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _registered_names(pm) -> set[str]:
    return {name for name, _ in pm.list_name_plugin()}


# --------------------------------------------------------------------------
# built-ins are plugins
# --------------------------------------------------------------------------


class TestBuiltins:
    def test_builtins_are_registered_by_name(self, pm):
        for name in ("compile_mode", "script", "trace", "unsupported"):
            assert pm.has_plugin(name)

    def test_blocking_trace_makes_a_trace_claim_unknown(self, watch):
        model = Model(Leaf(), TracedLeaf())
        check = watch(model)
        x = torch.randn(2, 4)
        with pytest.raises(ts.UnknownStrategyError) as info:
            ts.compile(model, example_inputs=(x,), plugins=["no:trace"])
        text = str(info.value)
        assert "at 'layers.1'" in text
        assert "'trace'" in text
        known = text.split("known strategies: ", 1)[1]
        assert "'script'" in known and "'unsupported'" in known and "'trace'" not in known
        check()
        # without the block the same call works
        compiled = ts.compile(model, example_inputs=(x,))
        torch.testing.assert_close(compiled(x), model(x))
        check()

    def test_blocking_trace_makes_a_trace_rule_unknown(self):
        with pytest.raises(ts.UnknownStrategyError, match="known strategies: ") as info:
            ts.plan(Model(Leaf(), Leaf()), rules=[ts.Rule("trace", path="layers.0")], plugins=["no:trace"])
        known = str(info.value).split("known strategies: ", 1)[1]
        assert "'script'" in known and "'unsupported'" in known and "'trace'" not in known


# --------------------------------------------------------------------------
# a third-party strategy
# --------------------------------------------------------------------------


class MyScript:
    """Registers ``my_script`` and claims every ``Looping`` module for it."""

    name = "my-script"

    def __init__(self) -> None:
        self.compiled: list[tuple[str, str]] = []

    def _compile(self, module, context):
        self.compiled.append((context.node.path, type(module).__qualname__))
        return torch.jit.script(module)

    @ts.hookimpl
    def torchstitch_strategies(self):
        return [
            ts.Strategy(
                name="my_script",
                family="torchscript",
                compile=self._compile,
                description="test strategy",
            )
        ]

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        if isinstance(module, Looping):
            return ts.Claim("my_script", ts.ClaimKind.RULE, "plugin my-script", "loops")
        return None


class TestThirdPartyStrategy:
    def test_plugin_strategy_claims_and_compiles(self, watch):
        model = Model(Leaf(), Looping())
        check = watch(model)
        plugin = MyScript()
        plan = ts.plan(model, plugins=[plugin])
        node = plan["layers.1"]
        assert node.strategy == "my_script"
        assert node.claim.claimant == "plugin my-script"
        assert node.claim_kind is ts.ClaimKind.RULE
        assert plugin.compiled == []  # planning compiles nothing

        x = torch.randn(3, 4)
        compiled = ts.compile(model, example_inputs=(x,), plugins=[plugin])
        assert plugin.compiled == [("layers.1", "Looping")]
        assert isinstance(compiled.layers[1], torch.jit.ScriptModule)
        assert type(compiled.layers[0]) is Leaf and compiled.layers[0] is not model.layers[0]
        assert compiled.layers[0].lin.weight is model.layers[0].lin.weight
        for sample in (x, -x.abs() - 1, x.abs() + 1):  # both branches of the loop
            torch.testing.assert_close(compiled(sample), model(sample))
        check()

    def test_plugin_strategy_inside_script_region(self):
        # same family as the built-in script region: it may sit inside it
        model = Model(Leaf(), Looping())
        plugin = MyScript()
        x = torch.randn(3, 4)
        compiled = ts.script(model, plugins=[plugin])
        assert plugin.compiled == [("layers.1", "Looping")]
        assert isinstance(compiled, torch.jit.ScriptModule)
        torch.testing.assert_close(compiled(x), model(x))
        torch.testing.assert_close(compiled(-x.abs() - 1), model(-x.abs() - 1))

    def test_rule_can_name_plugin_strategy(self):
        plugin = MyScript()
        plan = ts.plan(Model(Leaf(), Leaf()), rules=[ts.Rule("my_script", path="layers.0")], plugins=[plugin])
        assert plan["layers.0"].strategy == "my_script"
        with pytest.raises(ts.UnknownStrategyError, match="'my_script'"):
            ts.plan(Model(Leaf(), Leaf()), rules=[ts.Rule("my_script", path="layers.0")])

    def test_plugin_strategy_is_not_registered_globally(self):
        ts.plan(Model(Leaf(), Looping()), plugins=[MyScript()])
        assert ts.plan(Model(Leaf(), Looping()))["layers.1"].claim is None


# --------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------


class TestAutoload:
    def test_entry_point_plugin_loaded_by_default(self, monkeypatch):
        monkeypatch.delenv("TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
        assert ts.make_plugin_manager().has_plugin("e3nn")

    def test_disable_autoload(self, monkeypatch):
        monkeypatch.setenv("TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD", "1")
        pm = ts.make_plugin_manager()
        assert not pm.has_plugin("e3nn")
        assert pm.has_plugin("script")  # built-ins still load

    def test_explicit_autoload_argument_beats_env(self, monkeypatch):
        monkeypatch.setenv("TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD", "1")
        assert ts.make_plugin_manager(autoload=True).has_plugin("e3nn")
        monkeypatch.delenv("TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD")
        assert not ts.make_plugin_manager(autoload=False).has_plugin("e3nn")

    def test_entry_point_plugin_blockable(self, monkeypatch):
        monkeypatch.delenv("TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
        assert not ts.make_plugin_manager(["no:e3nn"]).has_plugin("e3nn")


# --------------------------------------------------------------------------
# fault isolation
# --------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


class RaisingClaim:
    name = "faulty"

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        if path == "layers.1":
            raise Boom("claim exploded")
        return None


class BadClaim:
    name = "bad-claim"

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        return "script" if path == "layers.0" else None


class OverrideClaim:
    name = "greedy"

    @ts.hookimpl
    def torchstitch_claim(self, module, path):
        return ts.Claim("script", ts.ClaimKind.OVERRIDE, "plugin greedy") if path == "" else None


class GarbageStrategies:
    name = "garbage"

    @ts.hookimpl
    def torchstitch_strategies(self):
        return ["script"]


class DuplicateScript:
    name = "dup"

    @ts.hookimpl
    def torchstitch_strategies(self):
        return [ts.Strategy(name="script", family="torchscript", compile=lambda m, c: m)]


class BadPrepare:
    name = "bad-prepare"

    @ts.hookimpl
    def torchstitch_prepare(self, module, node, strategy):
        return "not a module"


class RaisingPrepare:
    name = "raising-prepare"

    @ts.hookimpl
    def torchstitch_prepare(self, module, node, strategy):
        raise Boom("prepare exploded")


class NonModuleStrategy:
    name = "tensor-maker"

    @ts.hookimpl
    def torchstitch_strategies(self):
        return [ts.Strategy(name="to_tensor", family="torchscript", compile=lambda m, c: torch.ones(1))]


def _model():
    return Model(Leaf(), Leaf())


class TestFaultIsolation:
    def test_raising_claim_hook(self, watch):
        model = _model()
        check = watch(model)
        with pytest.raises(ts.PluginError) as info:
            ts.compile(model, example_inputs=(torch.randn(2, 4),), plugins=[RaisingClaim()])
        err = info.value
        assert type(err) is ts.PluginError
        assert err.plugin == "faulty"
        assert err.hook == "torchstitch_claim"
        assert isinstance(err.__cause__, Boom)
        assert str(err.__cause__) == "claim exploded"
        text = str(err)
        assert "'faulty'" in text and "'torchstitch_claim'" in text
        assert "Boom: claim exploded" in text
        check()

    def test_raising_claim_hook_names_the_path(self):
        # the claim hook runs for one node: the error says which
        with pytest.raises(ts.PluginError) as info:
            ts.plan(_model(), plugins=[RaisingClaim()])
        assert "at 'layers.1'" in str(info.value)
        assert info.value.path == "layers.1"

    def test_blocking_the_faulty_plugin(self, watch):
        model = _model()
        check = watch(model)
        x = torch.randn(2, 4)
        compiled = ts.compile(
            model,
            example_inputs=(x,),
            rules=[ts.Rule("script", path="layers.1")],
            plugins=[RaisingClaim(), "no:faulty"],
        )
        assert isinstance(compiled.layers[1], torch.jit.ScriptModule)
        torch.testing.assert_close(compiled(x), model(x))
        check()

    def test_claim_hook_returning_non_claim(self, watch):
        model = _model()
        check = watch(model)
        with pytest.raises(ts.PluginError) as info:
            ts.compile(model, plugins=[BadClaim()])
        err = info.value
        assert err.plugin == "bad-claim" and err.hook == "torchstitch_claim"
        text = str(err)
        assert "at 'layers.0'" in text
        assert "'script'" in text  # what it returned
        assert "Claim" in text
        check()

    def test_claim_hook_returning_override(self):
        with pytest.raises(ts.PluginError, match="override") as info:
            ts.plan(_model(), plugins=[OverrideClaim()])
        assert info.value.plugin == "greedy"
        assert "at '<root>'" in str(info.value)

    def test_strategies_hook_returning_garbage(self):
        with pytest.raises(ts.PluginError) as info:
            ts.plan(_model(), plugins=[GarbageStrategies()])
        err = info.value
        assert err.plugin == "garbage" and err.hook == "torchstitch_strategies"
        assert "['script']" in str(err)
        # blocked, it is harmless
        assert ts.plan(_model(), plugins=[GarbageStrategies(), "no:garbage"])[""].claim is None

    def test_two_plugins_same_strategy_name(self):
        with pytest.raises(ts.PluginError) as info:
            ts.plan(_model(), plugins=[DuplicateScript()])
        err = info.value
        assert err.hook == "torchstitch_strategies"
        assert err.plugin in ("dup", "script")
        other = "script" if err.plugin == "dup" else "dup"
        text = str(err)
        assert f"Plugin {err.plugin!r}" in text  # both providers are named
        assert f"strategy 'script' is already provided by plugin {other!r}" in text
        # blocking the built-in lets the replacement in
        plan = ts.plan(
            _model(), rules=[ts.Rule("script", path="layers.0")], plugins=[DuplicateScript(), "no:script"]
        )
        assert plan["layers.0"].strategy == "script"

    def test_prepare_returning_non_module(self, watch):
        model = _model()
        check = watch(model)
        with pytest.raises(ts.PluginError) as info:
            ts.compile(model, rules=[ts.Rule("script", path="layers.1")], plugins=[BadPrepare()])
        err = info.value
        assert type(err) is ts.PluginError
        assert err.plugin == "bad-prepare" and err.hook == "torchstitch_prepare"
        assert "at 'layers.1'" in str(err)
        assert "str" in str(err)
        check()

    def test_prepare_raising(self, watch):
        model = _model()
        check = watch(model)
        with pytest.raises(ts.PluginError) as info:
            ts.compile(model, rules=[ts.Rule("script", path="layers.1")], plugins=[RaisingPrepare()])
        err = info.value
        assert err.plugin == "raising-prepare" and err.hook == "torchstitch_prepare"
        assert isinstance(err.__cause__, Boom)
        assert "at 'layers.1'" in str(err)
        check()

    def test_strategy_compile_returning_non_module(self, watch):
        model = _model()
        check = watch(model)
        with pytest.raises(ts.PluginError) as info:
            ts.compile(model, rules=[ts.Rule("to_tensor", path="layers.0")], plugins=[NonModuleStrategy()])
        err = info.value
        assert type(err) is ts.PluginError
        assert err.plugin == "tensor-maker"
        text = str(err)
        assert "at 'layers.0'" in text
        assert "'to_tensor'" in text
        assert "Tensor" in text
        check()

    def test_in_place_failure_leaves_model_unchanged(self, watch):
        model = _model()
        check = watch(model)
        with pytest.raises(ts.PluginError):
            ts.compile(
                model,
                rules=[ts.Rule("script", path="layers.0"), ts.Rule("to_tensor", path="layers.1")],
                plugins=[NonModuleStrategy()],
                in_place=True,
            )
        check()
        assert type(model.layers[0]) is Leaf


# --------------------------------------------------------------------------
# plugins= argument and the default manager
# --------------------------------------------------------------------------


class TestPluginsArgument:
    def test_default_manager_not_modified(self):
        default = ts.get_plugin_manager()
        before = _registered_names(default)
        blocked_before = {name for name in before if default.is_blocked(name)}
        model = Model(Leaf(), Looping())
        x = torch.randn(2, 4)
        compiled = ts.compile(model, example_inputs=(x,), plugins=[MyScript(), "no:trace"])
        torch.testing.assert_close(compiled(x), model(x))
        assert ts.get_plugin_manager() is default
        assert _registered_names(default) == before
        assert not default.has_plugin("my-script")
        assert default.has_plugin("trace") and not default.is_blocked("trace")
        assert {name for name in before if default.is_blocked(name)} == blocked_before

    def test_string_instead_of_list(self):
        for fn in (ts.plan, ts.compile):
            with pytest.raises(TypeError, match="no:x"):
                fn(_model(), plugins="no:x")

    @pytest.mark.parametrize("entry", ["bogus", "no:", "trace"])
    def test_bad_string_entry(self, entry):
        with pytest.raises(ValueError, match=repr(entry)):
            ts.plan(_model(), plugins=[entry])

    def test_make_plugin_manager_bad_string(self):
        with pytest.raises(ValueError, match="'bogus'"):
            ts.make_plugin_manager(["bogus"])

    def test_same_plugin_name_twice(self):
        with pytest.raises(ValueError, match="'my-script'"):
            ts.plan(_model(), plugins=[MyScript(), MyScript()])

    def test_empty_list_is_a_private_manager_with_builtins(self):
        plan = ts.plan(Model(Leaf(), TracedLeaf()), plugins=[])
        assert plan["layers.1"].strategy == "trace"


class TestDefaultManagerOfCoreTests:
    """tests/core/conftest.py gives every core test a fresh default manager without entry points."""

    def test_it_is_the_default_and_has_no_entry_point_plugins(self, default_plugin_manager):
        assert ts.get_plugin_manager() is default_plugin_manager
        assert default_plugin_manager.has_plugin("script")
        assert not default_plugin_manager.has_plugin("e3nn")
        assert ts.make_plugin_manager(autoload=True).has_plugin("e3nn")  # installed, not loaded
        assert not ts.make_plugin_manager().has_plugin("e3nn")  # nor by managers for plugins=

    def test_calls_without_plugins_use_it(self, default_plugin_manager):
        model = Model(Leaf(), Looping())
        assert ts.plan(model)["layers.1"].claim is None
        default_plugin_manager.register(MyScript(), name="my-script")
        assert ts.plan(model)["layers.1"].strategy == "my_script"
        x = torch.randn(3, 4)
        compiled = ts.compile(model, example_inputs=(x,))
        assert isinstance(compiled.layers[1], torch.jit.ScriptModule)
        torch.testing.assert_close(compiled(x), model(x))


def test_debug_env_logs_every_hook_call(monkeypatch, caplog):
    # TORCHSTITCH_DEBUG turns on pluggy's own tracing (as pytest's PYTEST_DEBUG), written to the log
    monkeypatch.setenv("TORCHSTITCH_DEBUG", "1")
    caplog.set_level("DEBUG", logger="torchstitch")

    @ts.compile_mode("script")
    class Scripted(torch.nn.Module):
        def forward(self, x):
            return x

    ts.plan(torch.nn.Sequential(Scripted()), plugins=[])
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "torchstitch.core.plugin_manager")
    assert "torchstitch_claim [hook]" in text
    assert "path: 0" in text
    assert "finish torchstitch_claim --> [Claim(strategy='script'" in text
    assert "finish torchstitch_claim --> [] [hook]" in text


def test_debug_tracing_is_off_by_default(monkeypatch, caplog):
    monkeypatch.delenv("TORCHSTITCH_DEBUG", raising=False)
    caplog.set_level("DEBUG", logger="torchstitch")
    ts.plan(torch.nn.Sequential(torch.nn.ReLU()), plugins=[])
    assert not [r for r in caplog.records if r.name == "torchstitch.core.plugin_manager"]


# --------------------------------------------------------------------------
# pluggy calls the hooks: wrappers, blame
# --------------------------------------------------------------------------


class CountingWrapper:
    """A new-style hook wrapper around every claim call: sees every answer list."""

    name = "counting-wrapper"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @ts.hookimpl(wrapper=True)
    def torchstitch_claim(self, path):
        answers = yield
        self.seen.append(path)
        return answers


class RewritingWrapper:
    """A wrapper that changes the answers: every scripted claim becomes a trace claim."""

    name = "rewriting-wrapper"

    @ts.hookimpl(wrapper=True)
    def torchstitch_claim(self):
        answers = yield
        return [attrs.evolve(c, strategy="trace") if c.strategy == "script" else c for c in answers]


class RaisingWrapper:
    name = "raising-wrapper"

    @ts.hookimpl(wrapper=True)
    def torchstitch_claim(self, path):
        answers = yield
        if path == "layers.0":
            raise Boom("wrapper exploded")
        return answers


class TestWrappers:
    def test_a_wrapper_sees_every_claim_call(self):
        wrapper = CountingWrapper()
        plan = ts.plan(Model(ScriptedLeaf(), Leaf()), plugins=[wrapper])
        assert wrapper.seen == ["", "layers", "layers.0", "layers.0.lin", "layers.1", "layers.1.lin"]
        assert plan["layers.0"].strategy == "script"

    def test_a_wrapper_changes_the_answers(self):
        model = Model(ScriptedLeaf(), Leaf())
        plan = ts.plan(model, plugins=[RewritingWrapper()])
        assert plan["layers.0"].strategy == "trace"
        x = torch.randn(2, 4)
        compiled = ts.compile(model, example_inputs=(x,), plugins=[RewritingWrapper()])
        torch.testing.assert_close(compiled(x), model(x))
        assert isinstance(compiled.layers[0], torch.jit.ScriptModule)

    def test_an_implementation_raising_under_a_wrapper_is_blamed(self, watch):
        # the wrapper re-raises the implementation's error: the implementation is at fault
        model = _model()
        check = watch(model)
        with pytest.raises(ts.PluginError) as info:
            ts.compile(
                model, example_inputs=(torch.randn(2, 4),), plugins=[CountingWrapper(), RaisingClaim()]
            )
        err = info.value
        assert (err.plugin, err.hook, err.path) == ("faulty", "torchstitch_claim", "layers.1")
        assert "at 'layers.1'" in str(info.value)
        check()

    def test_a_raising_wrapper_is_blamed(self, watch):
        model = _model()
        check = watch(model)
        with pytest.raises(ts.PluginError) as info:
            ts.compile(model, example_inputs=(torch.randn(2, 4),), plugins=[RaisingWrapper()])
        err = info.value
        assert (err.plugin, err.hook, err.path) == ("raising-wrapper", "torchstitch_claim", "layers.0")
        assert "'raising-wrapper'" in str(err) and "at 'layers.0'" in str(err)
        assert isinstance(err.__cause__, Boom)
        check()

    def test_a_wrapper_around_an_observer(self):
        seen = []

        class Around:
            name = "around"

            @ts.hookimpl(wrapper=True)
            def torchstitch_node_compiled(self, node):
                seen.append(("before", node.path))
                yield
                seen.append(("after", node.path))

        model = Model(ScriptedLeaf(), Leaf())
        x = torch.randn(2, 4)
        compiled = ts.compile(model, plugins=[Around()])
        torch.testing.assert_close(compiled(x), model(x))
        assert seen == [("before", "layers.0"), ("after", "layers.0")]
