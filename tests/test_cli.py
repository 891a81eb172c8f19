"""The ``torchstitch`` command: plan, compile, strategies, demo; exit codes and messages."""

import json
import logging
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

import torchstitch as ts
from torchstitch import cli

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

MODELS = """
import torch
import torchstitch as ts


@ts.compile_mode("trace")
class Feat(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.feat = Feat()
        self.out = torch.nn.Linear(3, 2)

    def forward(self, x):
        y = self.feat(x)
        if bool(y.sum() > 0):
            return self.out(y)
        return -self.out(y)


@ts.compile_mode("script")
class Lambda(torch.nn.Module):
    def forward(self, x):
        double = lambda t: t * 2  # noqa: E731 - TorchScript cannot script a lambda
        return double(x)


class Broken(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bad = Lambda()

    def forward(self, x):
        return self.bad(x)


def make():
    torch.manual_seed(0)
    return Net(), (torch.randn(4, 3),)


def make_module_only():
    return Net()


def make_broken():
    return Broken(), torch.randn(2, 3)


def make_nothing():
    return 42


NOT_CALLABLE = 3
"""


@pytest.fixture
def models(tmp_path):
    """Path of a file defining the models above (``SPEC`` ``FILE:make``)."""
    path = tmp_path / f"cli_models_{uuid.uuid4().hex[:8]}.py"
    path.write_text(MODELS)
    return path


@pytest.fixture
def spec(models):
    return f"{models}:make"


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------
# plan
# --------------------------------------------------------------------------


class TestPlan:
    def test_tree_plain_when_not_a_terminal(self, capsys, spec, models):
        code, out, err = run(capsys, "plan", spec)
        assert code == 0, err
        stem = models.stem
        assert out.splitlines() == [
            "<root> (Net): inherit (python)",
            f"├── feat (Feat): trace · decorator by @compile_mode on {stem}.Feat",
            "│   └── lin (Linear): inherit (inside feat)",
            "└── out (Linear): inherit (python)",
        ]
        assert "\x1b[" not in out

    def test_verbose_shows_full_type_names(self, capsys, spec, models):
        code, out, err = run(capsys, "plan", spec, "--verbose")
        assert code == 0, err
        assert out.splitlines()[0] == f"<root> ({models.stem}.Net): inherit (python)"
        assert "└── out (torch.nn.modules.linear.Linear): inherit (python)" in out.splitlines()

    def test_color_always_colours_by_strategy(self, capsys, spec):
        code, out, _ = run(capsys, "plan", spec, "--color", "always")
        assert code == 0
        lines = out.splitlines()
        assert "\x1b[36mtrace · decorator" in lines[1]  # trace: cyan
        assert "\x1b[2minherit (python)\x1b[0m" in lines[0]  # inheriting: dim

    def test_rules_and_root(self, capsys, spec):
        code, out, _ = run(
            capsys, "plan", spec, "--rule", "out=trace", "--rule", "feat=inherit", "--root", "script"
        )
        assert code == 0
        lines = out.splitlines()
        assert "script · override by root_strategy= (forced by the caller)" in lines[0]
        assert "inherit (inside <root>)" in lines[1]
        assert "trace · override by rules[0] Rule('trace', path='out')" in lines[3]

    def test_json_is_the_plan(self, capsys, spec, models):
        code, out, _ = run(capsys, "plan", spec, "--format", "json", "--rule", "out=trace")
        assert code == 0
        module, _ = cli.load_spec(spec)
        expected = ts.plan(module, rules=[ts.Rule("trace", path="out")])
        assert ts.Plan.from_json(out) == expected
        assert out == expected.to_json() + "\n"

    def test_dot(self, capsys, spec):
        code, out, _ = run(capsys, "plan", spec, "--format", "dot")
        assert code == 0
        assert out.startswith('digraph "plan" {')
        assert 'fillcolor="lightblue"' in out  # the traced node
        assert "n0 -> n1;" in out

    def test_package_module_spec(self, capsys, models, monkeypatch):
        monkeypatch.syspath_prepend(str(models.parent))
        code, out, err = run(capsys, "plan", f"{models.stem}:make_module_only", "-v")
        assert code == 0, err
        assert out.splitlines()[0] == f"<root> ({models.stem}.Net): inherit (python)"


# --------------------------------------------------------------------------
# usage errors: exit code 2
# --------------------------------------------------------------------------


class TestUsageErrors:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["plan", "no_colon_here"], "bad SPEC 'no_colon_here': expected 'package.module:factory'"),
            (["plan", "missing/file.py:make"], "no such file 'missing/file.py'"),
            (
                ["plan", "torchstitch_no_such_module_xyz:make"],
                "importing 'torchstitch_no_such_module_xyz' raised",
            ),
            (
                ["plan", "torchstitch.demo:nope"],
                "unknown factory 'nope' in 'torchstitch.demo'; callables there:",
            ),
            (["plan", "torchstitch.demo:__doc__"], "'__doc__' is a str, not callable"),
        ],
    )
    def test_bad_spec(self, capsys, argv, message):
        code, out, err = run(capsys, *argv)
        assert code == 2
        assert out == ""
        assert err.startswith("torchstitch plan: error: ")
        assert message in err

    def test_factory_returning_no_module(self, capsys, models):
        code, _, err = run(capsys, "plan", f"{models}:make_nothing")
        assert code == 2
        assert "returned int; expected a torch.nn.Module or (module, example_inputs)" in err

    def test_unknown_factory_lists_callables(self, capsys, models):
        code, _, err = run(capsys, "compile", f"{models}:nope", "-o", "x.pt")
        assert code == 2
        assert "unknown factory 'nope'" in err
        assert "make, make_broken, make_module_only, make_nothing" in err

    @pytest.mark.parametrize(
        ("rule", "message"),
        [
            ("layers.0", "bad --rule 'layers.0': expected PATH_GLOB=STRATEGY"),
            ("layers.0=", "bad --rule 'layers.0=': expected PATH_GLOB=STRATEGY"),
            ("a..b=trace", "bad --rule 'a..b=trace': malformed path glob 'a..b'"),
            ("out=nope", "unknown strategy 'nope' in --rule; known strategies: "),
        ],
    )
    def test_bad_rule(self, capsys, spec, rule, message):
        code, _, err = run(capsys, "plan", spec, "--rule", rule)
        assert code == 2
        assert message in err

    def test_unknown_root_strategy(self, capsys, spec, tmp_path):
        code, _, err = run(capsys, "compile", spec, "-o", tmp_path / "m.pt", "--root", "nope")
        assert code == 2
        assert "unknown strategy 'nope' in --root" in err
        assert not (tmp_path / "m.pt").exists()

    def test_argparse_errors_return_2(self, capsys):
        assert cli.main([]) == 2
        assert cli.main(["compile", "x:y"]) == 2  # -o is required
        assert "the following arguments are required: -o/--output" in capsys.readouterr().err

    def test_help_returns_0(self, capsys):
        assert cli.main(["--help"]) == 0
        assert "plan" in capsys.readouterr().out


# --------------------------------------------------------------------------
# compile
# --------------------------------------------------------------------------


class TestCompile:
    def test_compiles_saves_and_matches_eager(self, capsys, spec, tmp_path):
        out_file = tmp_path / "model.pt"
        code, out, err = run(capsys, "compile", spec, "-o", out_file, "--root", "script")
        assert code == 0, err
        lines = out.splitlines()
        assert "script · override by root_strategy=" in lines[0]
        assert "verified on 1" in lines[0]
        assert "inputs: inputs.recorded" in lines[1]
        assert re.fullmatch(
            rf"compiled 2 node\(s\) in \d+\.\d\d s; largest difference against eager \S+; saved {out_file}",
            lines[-1],
        )
        artifact = ts.load(out_file)
        model, (x,) = cli.load_spec(spec)
        for scale in (0.01, 10.0, -10.0):  # both branches of the scripted root
            torch.testing.assert_close(artifact(scale * x), model(scale * x))
        assert artifact.plan["feat"].strategy == "trace"
        assert artifact.plan[""].outcome.n_verified == 1

    def test_no_verify(self, capsys, spec, tmp_path):
        code, out, _ = run(
            capsys, "compile", spec, "-o", tmp_path / "m.pt", "--root", "script", "--no-verify"
        )
        assert code == 0
        assert out.splitlines()[-1].endswith(f"not verified (--no-verify); saved {tmp_path / 'm.pt'}")
        assert ts.load(tmp_path / "m.pt").plan["feat"].outcome.n_verified == 0

    def test_rule_applies(self, capsys, spec, tmp_path):
        code, _, _ = run(
            capsys, "compile", spec, "-o", tmp_path / "m.pt", "--root", "script", "--rule", "out=trace"
        )
        assert code == 0
        plan = ts.load(tmp_path / "m.pt").plan
        assert plan["out"].strategy == "trace"
        assert plan["out"].outcome.inputs_source == "inputs.recorded"

    def test_compile_failure_names_the_node(self, capsys, models, tmp_path):
        code, out, err = run(capsys, "compile", f"{models}:make_broken", "-o", tmp_path / "m.pt")
        assert code == 1
        assert out == ""
        assert err.startswith(
            "torchstitch compile: NodeCompileError: [at 'bad', strategy 'script', claimed by"
        )
        assert not (tmp_path / "m.pt").exists()

    def test_python_root_cannot_be_saved(self, capsys, spec, tmp_path):
        code, _, err = run(capsys, "compile", spec, "-o", tmp_path / "m.pt")
        assert code == 1
        assert err.startswith("torchstitch compile: ArtifactError: [at '<root>']")
        assert "Claim the root with a strategy whose artifact a format saves" in err
        assert "'torchscript': a TorchScript archive" in err


# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------


class TestStrategies:
    def test_lists_strategies_plugins_and_hooks(self, capsys):
        code, out, _ = run(capsys, "strategies")
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == "plugins:"
        assert re.search(r"^  script +built-in$", out, re.M)
        assert re.search(r"^  e3nn +torchstitch " + re.escape(ts.__version__) + "$", out, re.M)
        assert re.search(
            r"^  trace +family torchscript, from trace \(built-in\), needs tracing inputs: ", out, re.M
        )
        claims = lines[lines.index("claim providers (torchstitch_claim), in call order:") + 1 :]
        assert "  compile_mode (built-in)" in claims
        assert f"  e3nn (torchstitch {ts.__version__})" in claims
        assert lines[lines.index("blocked:") + 1] == "  (none)"

    def test_blocked_plugins(self, capsys):
        code, out, _ = run(capsys, "strategies", "-p", "no:trace", "-p", "no:e3nn", "-p", "no:nope")
        assert code == 0
        lines = out.splitlines()
        listed = lines[lines.index("strategies:") + 1 :]
        end = next(i for i, line in enumerate(listed) if not line.startswith("  "))
        names = [line.split()[0] for line in listed[:end]]
        assert "script" in names and "unsupported" in names
        assert "trace" not in names
        blocked = lines[lines.index("blocked:") + 1 :]
        assert blocked[:3] == [
            "  trace (built-in)",
            f"  e3nn (torchstitch {ts.__version__}, entry point)",
            "  nope (no such plugin is installed)",
        ]

    def test_plugin_from_command_line(self, capsys, tmp_path, monkeypatch):
        name = f"cli_plugin_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(
            textwrap.dedent(
                """
                import torch
                import torchstitch as ts

                MINE = ts.Strategy(
                    name="mine",
                    family="torchscript",
                    compile=lambda m, c: torch.jit.script(m),
                    description="scripted, by a -p plugin",
                )

                @ts.hookimpl
                def torchstitch_strategies():
                    return [MINE]
                """
            )
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        code, out, _ = run(capsys, "strategies", "-p", name)
        assert code == 0
        assert re.search(
            rf"^  mine +family torchscript, from {name} \(-p \(command line\)\): scripted, by a -p plugin$",
            out,
            re.M,
        )

    def test_bad_plugin_module_is_usage_error(self, capsys):
        code, _, err = run(capsys, "strategies", "-p", "torchstitch_no_such_plugin_xyz")
        assert code == 2
        assert "bad -p 'torchstitch_no_such_plugin_xyz': ModuleNotFoundError" in err


# --------------------------------------------------------------------------
# logging, demo, the console script
# --------------------------------------------------------------------------


def test_debug_log_has_one_line_per_compiled_node(caplog, spec):
    model, example = cli.load_spec(spec)
    with caplog.at_level(logging.DEBUG, logger="torchstitch"):
        result = ts.Engine(rules=[ts.Rule("trace", path="out")]).compile(
            model, example_inputs=example, root_strategy="script"
        )
    compiled = [n.path for n in result.plan.post_order() if n.outcome is not None]
    assert compiled == ["feat", "out", ""]
    node_lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "torchstitch.core.engine" and re.match(r"^\S+: \w+ in [\d.]+ ms", r.getMessage())
    ]
    assert [line.split(":")[0] for line in node_lines] == ["feat", "out", "<root>"]
    assert node_lines[0].startswith("feat: trace in ")
    assert node_lines[0].endswith("(inputs: inputs.recorded)")
    assert node_lines[2].startswith("<root>: script in ")


def test_verbose_logs_to_stderr_and_cleans_up(capsys, spec, tmp_path):
    handlers = list(logging.getLogger("torchstitch").handlers)
    code, _, err = run(capsys, "compile", spec, "-o", tmp_path / "m.pt", "--root", "script", "-vv")
    assert code == 0
    assert re.search(r"^DEBUG torchstitch.core.engine: feat: trace in [\d.]+ ms", err, re.M)
    assert logging.getLogger("torchstitch").handlers == handlers


def test_demo(capsys, tmp_path):
    pytest.importorskip("e3nn", reason="the demo compiles an e3nn model")
    code, out, _ = run(capsys, "demo", "-o", tmp_path / "seed.pt")
    assert code == 0
    assert out.splitlines()[-1] == "OK"
    assert ts.load(tmp_path / "seed.pt").plan["norm"].strategy == "trace"


def test_console_script(spec):
    script = Path(sys.executable).with_name("torchstitch")
    if not script.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    done = subprocess.run(
        [str(script), "plan", spec, "--format", "json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["root"]["children"][0]["claim"]["strategy"] == "trace"
    bad = subprocess.run(
        [sys.executable, "-m", "torchstitch", "plan", spec, "--rule", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "bad --rule 'x'" in bad.stderr
