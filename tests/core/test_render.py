"""Presentation of plans: ANSI colours by strategy, NO_COLOR, the Graphviz DOT writer."""

import io
import re
import shutil
import subprocess

import pytest
import torch

import torchstitch as ts
from torchstitch.core import render

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@ts.compile_mode("trace")
class Traced(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x)


class Root(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Traced()
        self.b = torch.nn.ReLU()
        self.again = self.a  # the same module at a second path

    def forward(self, x):
        return self.b(self.a(x)) + self.again(x)


@pytest.fixture
def plan():
    return ts.plan(Root())


@pytest.fixture
def compiled():
    model = Root()
    x = torch.randn(4, 3)
    result = ts.Engine().compile(model, example_inputs=(x,), root_strategy="script")
    torch.testing.assert_close(result.module(x), model(x))
    return result


class TestAnsi:
    def test_color_false_is_the_plain_tree(self, plan):
        assert plan.render(color=False) == plan.render() == str(plan)
        assert not ANSI.search(plan.render())

    def test_color_wraps_each_description_in_its_strategy_colour(self, plan):
        colored = plan.render(color=True).splitlines()
        plain = plan.render().splitlines()
        assert [ANSI.sub("", line) for line in colored] == plain
        assert colored[0].endswith("\x1b[2minherit (python)\x1b[0m")
        assert "\x1b[36mtrace · decorator by @compile_mode on" in colored[1]

    def test_outcome_still_shown_when_coloured(self, compiled):
        lines = compiled.plan.render(color=True).splitlines()
        assert lines[0].startswith("<root> (")
        assert "\x1b[32mscript · override by root_strategy=" in lines[0]
        assert ANSI.sub("", lines[1]).endswith(
            f"— {compiled.plan['a'].outcome.seconds * 1e3:.1f} ms, inputs: inputs.recorded, "
            f"verified on 1, max|Δ| {compiled.plan['a'].outcome.max_abs_diff:.2e}, train mode"
        )

    def test_strategies_without_a_colour_get_a_stable_palette_colour(self):
        assert render.ansi_code("my_strategy") == render.ansi_code("my_strategy")
        palette = {render.COLORS[name] for name in render.PALETTE}
        assert (render.ansi_code("my_strategy"), render.dot_color("my_strategy")) in palette
        assert render.ansi("x", "script", {"script": "green"}) == "\x1b[32mx\x1b[0m"

    def test_a_strategy_declares_its_colour_and_the_plan_carries_it(self):
        plan = ts.plan(torch.nn.Linear(2, 2), rules=[ts.Rule("mine", path="")], plugins=[Plugin()])
        assert plan.colors == {"mine": "red"}
        assert plan.render(color=True).startswith("<root> (Linear): \x1b[31mmine")
        assert 'fillcolor="lightcoral"' in plan.to_dot()
        assert ts.Plan.from_json(plan.to_json()).colors == {"mine": "red"}

    def test_a_colour_must_be_one_the_renderer_knows(self):
        with pytest.raises(ValueError, match="color"):
            ts.Strategy("mine", family="python", compile=lambda m, c: m, color="chartreuse")


class Plugin:
    name = "mine"

    @ts.hookimpl
    def torchstitch_strategies(self):
        return [ts.Strategy("mine", family="python", compile=lambda m, c: m, color="red")]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


class TestStreamWantsColor:
    def test_terminal(self, monkeypatch):
        monkeypatch.delenv("NO_COLOR", raising=False)
        assert render.stream_wants_color(FakeTerminal())
        assert not render.stream_wants_color(io.StringIO())

    def test_no_color_wins(self, monkeypatch):
        monkeypatch.setenv("NO_COLOR", "1")
        assert not render.stream_wants_color(FakeTerminal())

    def test_empty_no_color_is_ignored(self, monkeypatch):
        monkeypatch.setenv("NO_COLOR", "")
        assert render.stream_wants_color(FakeTerminal())

    def test_closed_stream(self):
        stream = io.StringIO()
        stream.close()
        assert not render.stream_wants_color(stream)


class TestDot:
    def test_structure(self, plan):
        dot = plan.to_dot()
        assert dot == plan.to_dot()  # deterministic
        lines = dot.splitlines()
        assert lines[0] == 'digraph "plan" {'
        assert lines[-1] == "}"
        ids = {node.path: f"n{i}" for i, node in enumerate(plan.walk())}
        assert ids == {"": "n0", "a": "n1", "a.lin": "n2", "b": "n3", "again": "n4"}
        assert "  n0 -> n1;" in lines
        assert "  n1 -> n2;" in lines
        assert "  n0 -> n4;" in lines
        assert '  n4 -> n1 [style=dashed, label="same module", constraint=false];' in lines
        (traced,) = [line for line in lines if line.startswith("  n1 [")]
        assert 'fillcolor="lightblue"' in traced
        assert r'label="a\nTraced\ntrace · decorator by @compile_mode' in traced
        assert r'label="a\n' + f"{Traced.__module__}.Traced" + r"\ntrace" in plan.to_dot(verbose=True)
        (inherit,) = [line for line in lines if line.startswith("  n3 [")]
        assert 'fillcolor="white"' in inherit and "dashed" in inherit
        assert '    legend0 [label="inherit", fillcolor="white"];' in lines
        assert '    legend1 [label="trace", fillcolor="lightblue"];' in lines

    def test_escapes_quotes_and_backslashes(self):
        node = ts.Node(path="", type_name='we"ird\\Type')
        dot = ts.Plan(node).to_dot(name='my "plan"')
        assert dot.startswith('digraph "my \\"plan\\"" {')
        assert r'label="<root>\nwe\"ird\\Type\ninherit (python)"' in dot

    def test_compiled_plan_shows_outcome(self, compiled):
        dot = compiled.plan.to_dot()
        assert 'fillcolor="palegreen"' in dot  # the scripted root
        assert re.search(r"inputs: inputs.recorded, verified on 1", dot)

    def test_graphviz_renders_it(self, compiled):
        dot_binary = shutil.which("dot")
        if dot_binary is None:
            pytest.skip("Graphviz's `dot` binary is not installed (apt-get install graphviz)")
        done = subprocess.run(
            [dot_binary, "-Tsvg"], input=compiled.plan.to_dot(), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        svg = done.stdout
        assert "<svg" in svg
        for text in ("&lt;root&gt;", "trace · decorator by @compile_mode", "same module", "strategies"):
            assert text in svg
