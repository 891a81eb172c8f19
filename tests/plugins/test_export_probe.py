"""The export plugin's failure localisation: reason codes, the deepest failing module, the probe table."""

import inspect
import re
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from torch.export import Dim

from torchstitch import TracingInputsError, cli
from torchstitch.plugins.export import (
    REASONS,
    ProbeReport,
    deepest_failure,
    diagnose,
    probe,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

DOCS = Path(__file__).resolve().parents[2] / "docs"


class Gate(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, h):
        h = self.lin(h)
        if h.sum() > 0:
            return h
        return -h


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = torch.nn.Linear(3, 3)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.pre(x))


class Net(torch.nn.Module):
    """A data-dependent branch two levels down (``block.gate``)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(3, 3)
        self.block = Block()
        self.unused = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.block(self.embed(x))


class Forces(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.energy = torch.nn.Linear(3, 1)

    def forward(self, pos):
        with torch.enable_grad():
            pos = pos.clone().requires_grad_(True)
            energy = torch.tanh(self.energy(pos)).sum()
            (grad,) = torch.autograd.grad(energy, pos)
        return energy.detach(), -grad


class WithForces(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Linear(3, 3)
        self.forces = Forces()

    def forward(self, pos):
        return self.forces(self.scale(pos))


class Leaf(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.relu(self.lin(x))


class WithScripted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = torch.nn.Linear(3, 3)
        self.scripted = torch.jit.script(Leaf())

    def forward(self, x):
        return self.scripted(self.pre(x)) + 1


class Clean(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Leaf()
        self.b = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())

    def forward(self, x):
        return self.b(self.a(x))


def line_of(function, text):
    """The line number of the first line of ``function``'s source containing ``text``."""
    lines, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(lines) if text in line)


def rows_by_path(report: ProbeReport):
    return {row.path: row for row in report.rows}


X = torch.randn(5, 3)

# --------------------------------------------------------------------------
# localisation: deepest_failure
# --------------------------------------------------------------------------


def test_deepest_failure_names_the_branch_two_levels_down_with_its_source_line():
    finding = deepest_failure(Net(), [{"forward": (X,)}], "model")
    assert finding is not None
    assert finding.path == "model.block.gate"
    assert finding.type_name.endswith(".Gate")
    diagnosis = finding.diagnosis
    assert diagnosis.code == "data_dependent_branch"
    assert diagnosis.error_type == "GuardOnDataDependentSymNode"
    assert diagnosis.first_line.startswith("Could not guard on data-dependent expression")
    assert Path(diagnosis.source.filename).resolve() == Path(__file__).resolve()
    assert diagnosis.source.lineno == line_of(Gate.forward, "if h.sum() > 0")
    assert diagnosis.source.code == "if h.sum() > 0:"
    assert "torch.cond" in diagnosis.hint


def test_deepest_failure_at_the_root_has_no_prefix():
    finding = deepest_failure(Net(), [{"forward": (X,)}])
    assert finding is not None and finding.path == "block.gate"


def test_deepest_failure_finds_autograd_grad():
    finding = deepest_failure(WithForces(), [{"forward": (X,)}], "")
    assert finding is not None
    assert (finding.path, finding.diagnosis.code) == ("forces", "autograd_in_forward")
    assert "make_fx" in finding.diagnosis.hint


def test_deepest_failure_finds_a_scripted_child():
    finding = deepest_failure(WithScripted(), [{"forward": (X,)}], "net")
    assert finding is not None
    assert (finding.path, finding.diagnosis.code) == ("net.scripted", "torchscript_module")
    assert finding.diagnosis.first_line.startswith("Exporting a ScriptModule is not supported")


def test_deepest_failure_is_none_when_every_child_exports():
    assert deepest_failure(Clean(), [{"forward": (X,)}], "clean") is None
    # the module's own code fails and its only child exports: no child to blame either
    assert deepest_failure(Gate(), [{"forward": (X,)}], "gate") is None


def test_deepest_failure_reports_an_eager_failure_at_its_path():
    calls = [{"forward": (torch.randn(5, 3),)}, {"forward": (torch.randn(5, 2),)}]
    with pytest.raises(TracingInputsError, match=r"^\[at 'model\.embed'\].*mat1 and mat2 shapes cannot"):
        deepest_failure(Net(), calls, "model")


# --------------------------------------------------------------------------
# the probe table
# --------------------------------------------------------------------------


def test_probe_exports_every_module_on_its_recorded_inputs():
    report = probe(Net(), (X,))
    assert [row.path for row in report.rows] == [
        "",
        "embed",
        "block",
        "block.pre",
        "block.gate",
        "block.gate.lin",
        "unused",
    ]
    rows = rows_by_path(report)
    assert {path: row.exports for path, row in rows.items()} == {
        "": False,
        "embed": True,
        "block": False,
        "block.pre": True,
        "block.gate": False,
        "block.gate.lin": True,
        "unused": None,  # never called
    }
    assert [row.path for row in report.deepest_failures()] == ["block.gate"]
    for path in ("", "block", "block.gate"):
        assert rows[path].diagnosis.code == "data_dependent_branch"
        assert rows[path].diagnosis.source.lineno == line_of(Gate.forward, "if h.sum() > 0")


def test_probe_render_is_a_table_then_the_deepest_failure():
    line = line_of(Gate.forward, "if h.sum() > 0")
    where = f"{Path(__file__).name}:{line} if h.sum() > 0:"
    cells = [
        ("path", "type", "exports", "reason", "where"),
        ("<root>", "Net", "no", "data_dependent_branch", where),
        ("embed", "Linear", "yes", "", ""),
        ("block", "Block", "no", "data_dependent_branch", where),
        ("block.pre", "Linear", "yes", "", ""),
        ("block.gate", "Gate", "no", "data_dependent_branch", where),
        ("block.gate.lin", "Linear", "yes", "", ""),
        ("unused", "Linear", "not run", "", ""),
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(5)]

    def joined(row):
        return " | ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()

    expected = [joined(cells[0]), joined(tuple("-" * w for w in widths)), *map(joined, cells[1:])]
    lines = probe(Net(), (X,)).render().splitlines()
    assert lines[: len(expected)] == expected
    details = lines[len(expected) :]
    assert details[0] == ""
    assert details[1].startswith("block.gate: GuardOnDataDependentSymNode: Could not guard on data-dependent")
    assert details[2] == f"  at {__file__}:{line}: if h.sum() > 0:"
    assert details[3].startswith("  hint: The code branches on tensor values")
    assert len(details) == 4


def test_probe_autograd_and_scripted_children():
    rows = rows_by_path(probe(WithForces(), (X,)))
    assert (rows["forces"].exports, rows["forces"].diagnosis.code) == (False, "autograd_in_forward")
    assert rows["scale"].exports and rows["forces.energy"].exports

    report = probe(WithScripted(), (X,))
    rows = rows_by_path(report)
    assert rows["scripted"].torchscript and rows["scripted"].diagnosis.code == "torchscript_module"
    # the eager parent fails inside the scripted child: a bare TypeError, still recognised
    assert rows[""].diagnosis.code == "torchscript_module"
    assert rows[""].diagnosis.source.lineno == line_of(WithScripted.forward, "self.scripted(")
    assert rows["pre"].exports
    # the modules inside the scripted child are part of it, not separate causes
    assert [row.path for row in report.deepest_failures()] == ["scripted"]


def test_probe_of_a_clean_model():
    report = probe(Clean(), (X,))
    assert all(row.exports for row in report.rows)
    assert report.failures() == [] and report.deepest_failures() == []
    assert " no " not in report.render()
    # input sets, as ts.compile takes them: the first is probed
    assert probe(Clean(), [(X,), (torch.randn(7, *X.shape[1:]),)]).render() == report.render()


def test_probe_keeps_torchs_partial_graph_out_of_stderr(capfd):
    probe(Net(), (X,))
    _, err = capfd.readouterr()
    assert "def forward" not in err
    assert "Unable to find user code" not in err


class Stateful(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(3)
        self.gate = Gate()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.gate(self.norm(x))


def test_probing_leaves_the_model_unchanged():
    model = Stateful()
    model.gate.eval()  # mixed training flags
    before = {name: value.clone() for name, value in model.state_dict().items()}
    buffers = {name: buffer for name, buffer in model.named_buffers()}
    flags = {name: module.training for name, module in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}

    report = probe(model, (X,))
    finding = deepest_failure(model, [{"forward": (X,)}, {"forward": (2 * X,)}], "m")

    assert [row.path for row in report.deepest_failures()] == ["gate"]
    assert finding is not None and finding.path == "m.gate"
    assert model.state_dict().keys() == before.keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(buffer is buffers[name] for name, buffer in model.named_buffers())
    assert {name: module.training for name, module in model.named_modules()} == flags
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------
# reason codes
# --------------------------------------------------------------------------


def _export_error(module, args, **options):
    try:
        torch.export.export(module, args, **options)
    except Exception as exc:
        return exc
    raise AssertionError(f"{type(module).__name__} exported")


class IntFromValue(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(int(x.max().item()))


class NumpyInside(torch.nn.Module):
    def forward(self, x):
        return x + float(x.numpy().sum())


class SetOutput(torch.nn.Module):
    def forward(self, x):
        return {x}


class TakesObject(torch.nn.Module):
    def forward(self, x, config):
        return x


class Config:
    pass


class Pair(torch.nn.Module):
    def forward(self, x, y):
        return x + y


class ShapeBranch(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] > 4:
            return x * 2
        return x - 1


class GraphBreak(torch.nn.Module):
    def forward(self, x):
        torch._dynamo.graph_break()
        return x + 1


class NoFakeKernel(torch.nn.Module):
    def forward(self, x):
        # an aten operator without a fake (meta) implementation in torch 2.13
        return torch.ops.aten._nested_tensor_from_tensor_list([x])


class Identity(torch.nn.Module):
    def forward(self, x):
        return x * 1


def scripted_leaf():
    return torch.jit.script(Leaf())


@pytest.mark.parametrize(
    "make, args, options, code",
    [
        (Gate, (X,), {}, "data_dependent_branch"),
        (Gate, (X,), {"strict": True}, "data_dependent_branch"),
        (IntFromValue, (X,), {}, "data_dependent_value"),
        (Forces, (X,), {}, "autograd_in_forward"),
        (ShapeBranch, (X,), {"dynamic_shapes": ({0: Dim("n")},)}, "constraint_violation"),
        (scripted_leaf, (X,), {}, "torchscript_module"),
        (NumpyInside, (X,), {}, "non_torch_code"),
        (NoFakeKernel, (X,), {}, "unsupported_operator"),
        (GraphBreak, (X,), {"strict": True}, "dynamo_unsupported"),
        (TakesObject, (X, Config()), {}, "input_structure"),
        (SetOutput, (X,), {}, "output_structure"),
        (Pair, (X, X), {"dynamic_shapes": {"z": {0: Dim("n")}, "y": None}}, "dynamic_shapes_spec"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_diagnose_gives_the_reason_code(make, args, options, code):
    exc = _export_error(make(), args, **options)
    diagnosis = diagnose(exc)
    assert diagnosis.code == code
    assert diagnosis.error_type == type(exc).__name__
    assert diagnosis.hint.startswith(REASONS[code].cure)
    assert diagnosis.known
    assert f"[reason: {code}]" in diagnosis.message()


def test_diagnose_finds_the_source_line_under_make_fx():
    from torch.fx.experimental.proxy_tensor import make_fx

    with pytest.raises(Exception) as info:
        graph = make_fx(Gate(), tracing_mode="symbolic", _allow_non_fake_inputs=True)(X)
        torch.export.export(graph, (X,))
    diagnosis = diagnose(info.value)
    assert diagnosis.code == "data_dependent_branch"
    assert Path(diagnosis.source.filename).resolve() == Path(__file__).resolve()
    assert diagnosis.source.lineno == line_of(Gate.forward, "if h.sum() > 0")


def test_diagnose_says_when_a_size_one_example_is_the_cause():
    exc = _export_error(Identity(), (torch.randn(1, 3),), dynamic_shapes=({0: Dim("n")},))
    diagnosis = diagnose(exc)
    assert diagnosis.code == "constraint_violation"
    assert diagnosis.hint.startswith("An example input has size 1 on a dimension declared dynamic")
    assert "(torch suggests: n = 1)" in diagnosis.hint


def test_an_unknown_error_is_other():
    diagnosis = diagnose(ValueError("something new\nmore"))
    assert (diagnosis.code, diagnosis.known) == ("other", False)
    assert diagnosis.first_line == "something new"
    assert diagnosis.source is None


def test_every_reason_code_is_documented_and_every_documented_code_exists():
    text = (DOCS / "export-reasons.md").read_text()
    documented = re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE)
    assert sorted(documented) == sorted(REASONS)
    assert len(documented) == len(set(documented))


# --------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------

MODELS = """
import torch


class Gate(torch.nn.Module):
    def forward(self, h):
        if h.sum() > 0:
            return h
        return -h


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.lin(x))


def make():
    return Net(), (torch.randn(4, 3),)


def make_module_only():
    return Net()
"""


@pytest.fixture
def models(tmp_path):
    path = tmp_path / f"probe_models_{uuid.uuid4().hex[:8]}.py"
    path.write_text(textwrap.dedent(MODELS))
    return path


def test_cli_probe_prints_the_table(capsys, models):
    code = cli.main(["plan", f"{models}:make", "--target", "export", "--probe"])
    out, err = capsys.readouterr()
    assert code == 0, err
    where = f"{models.name}:7 if h.sum() > 0:"
    table = [[cell.strip() for cell in line.split("|")] for line in out.splitlines()[:5]]
    assert table[0] == ["path", "type", "exports", "reason", "where"]
    assert table[2:] == [
        ["<root>", "Net", "no", "data_dependent_branch", where],
        ["lin", "Linear", "yes", "", ""],
        ["gate", "Gate", "no", "data_dependent_branch", where],
    ]
    assert f"  at {models}:7: if h.sum() > 0:" in out.splitlines()


def test_cli_probe_needs_target_export(capsys, models):
    code = cli.main(["plan", f"{models}:make", "--probe"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "--probe exports every module: it needs --target export" in err
    code = cli.main(["plan", f"{models}:make", "--target", "script", "--probe"])
    assert code == 2


def test_cli_probe_needs_example_inputs(capsys, models):
    code = cli.main(["plan", f"{models}:make_module_only", "--target", "export", "--probe"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "must return (module, example_inputs)" in err


def test_cli_plan_takes_a_target(capsys, models):
    code = cli.main(["plan", f"{models}:make", "--target", "export"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[0].startswith("<root> (Net): export")
