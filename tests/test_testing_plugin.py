"""torchstitch.testing: assert_compiles and the torchstitch_compile fixture (pytest11 plugin)."""

import pytest
import torch

import torchstitch as ts
from torchstitch.testing import assert_compiles

pytest_plugins = ["pytester"]

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]


class Branchy(torch.nn.Module):
    """A data-dependent branch: tracing it freezes one side."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        y = self.lin(x)
        if bool(y.sum() > 0):
            return y
        return -y


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Branchy()
        self.out = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.out(self.inner(x))


@ts.compile_mode("unsupported")
class Unsupported(torch.nn.Module):
    def forward(self, x):
        return x


class Holder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.child = Unsupported()

    def forward(self, x):
        return self.child(x)


def inputs_both_ways(model):
    """Inputs taking each branch of ``model.inner``."""
    x = torch.randn(4, 3)
    sign = 1.0 if bool(model.inner.lin(x).sum() > 0) else -1.0
    return sign * x, -sign * x


class TestAssertCompiles:
    def test_returns_the_result_and_compiled_matches_eager(self):
        model = Net()
        x, other = inputs_both_ways(model)
        result = assert_compiles(model, (x,), root_strategy="script", check_inputs=[(other,)])
        assert isinstance(result, ts.CompileResult)
        assert isinstance(result.module, torch.jit.ScriptModule)
        torch.testing.assert_close(result.module(other), model(other))
        assert result.plan[""].outcome.n_verified == 1

    @pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
    def test_traced_branch_fails_on_the_other_branch(self):
        model = Net()
        x, other = inputs_both_ways(model)
        rules = [ts.Rule("trace", path="inner")]
        # example_inputs alone cannot tell: the trace took the branch they take
        assert_compiles(model, (x,), rules=rules, root_strategy="script")
        with pytest.raises(
            AssertionError, match=r"the compiled model on check_inputs\[0\] differs from eager"
        ):
            assert_compiles(model, x, rules=rules, root_strategy="script", check_inputs=[other])

    def test_round_trip(self, tmp_path):
        model = Net()
        x, other = inputs_both_ways(model)
        result = assert_compiles(model, (x,), root_strategy="script", round_trip=True, save_dir=tmp_path)
        saved = tmp_path / "torchstitch_round_trip.pt"
        assert saved.exists()
        artifact = ts.load(saved)
        assert artifact.plan == result.plan
        torch.testing.assert_close(artifact(other), model(other))

    def test_round_trip_in_a_temporary_directory(self):
        model = Net()
        x, _ = inputs_both_ways(model)
        assert_compiles(model, x, root_strategy="script", round_trip=True)

    def test_detects_a_mutated_module(self):
        class Vandal:
            name = "vandal"

            @ts.hookimpl
            def torchstitch_node_compiled(self, original):
                original.vandalized = True  # what a well-behaved plugin must never do

        model = Net()
        x, _ = inputs_both_ways(model)
        with pytest.raises(
            AssertionError,
            match=r"after compiling: attributes of submodule '<root>' changed "
            r"\(added \['vandalized'\], removed \[\]\)",
        ):
            assert_compiles(model, (x,), root_strategy="script", plugins=[Vandal()])

    def test_in_place_is_allowed_to_change_the_module(self):
        model = Net()
        x, _ = inputs_both_ways(model)
        result = assert_compiles(model, (x,), rules=[ts.Rule("script", path="inner")], in_place=True)
        assert isinstance(model.inner, torch.jit.ScriptModule)
        assert result.module is model

    def test_tolerances_reach_the_comparison(self):
        model = Net()
        x, _ = inputs_both_ways(model)
        result = assert_compiles(model, (x,), root_strategy="script", atol=1e-3)
        assert result.plan[""].outcome.max_abs_diff <= 1e-3

    def test_inputs_keyword_goes_to_compile(self):
        model = Net()
        x, _ = inputs_both_ways(model)
        result = assert_compiles(
            model, (x,), rules=[ts.Rule("trace", path="out")], inputs={"out": (torch.randn(2, 3),)}
        )
        assert result.plan["out"].outcome.inputs_source == "inputs.caller"

    def test_needs_example_inputs(self):
        with pytest.raises(TypeError, match="assert_compiles needs example_inputs"):
            assert_compiles(Net(), None)

    def test_engine_errors_propagate(self):
        with pytest.raises(ts.UnsupportedModuleError, match="at 'child'"):
            assert_compiles(Holder(), (torch.randn(2, 3),), root_strategy="script")


def test_fixture_writes_round_trips_to_tmp_path(torchstitch_compile, tmp_path):
    model = Net()
    x, other = inputs_both_ways(model)
    result = torchstitch_compile(
        model, (x,), root_strategy="script", round_trip=True, check_inputs=[(other,)]
    )
    assert (tmp_path / "torchstitch_round_trip.pt").exists()
    assert result.plan["inner"].strategy is None


def test_plugin_is_auto_loaded_and_can_be_disabled(pytester):
    pytester.makepyfile(
        test_uses_fixture="""
        import torch

        def test_it(torchstitch_compile):
            model = torch.nn.Linear(3, 2)
            result = torchstitch_compile(model, (torch.randn(4, 3),), root_strategy="script")
            assert isinstance(result.module, torch.jit.ScriptModule)
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "-W", "ignore").assert_outcomes(passed=1)
    disabled = pytester.runpytest_inprocess("-p", "no:torchstitch", "-p", "no:cacheprovider")
    disabled.assert_outcomes(errors=1)
    disabled.stdout.fnmatch_lines(["*fixture 'torchstitch_compile' not found*"])
