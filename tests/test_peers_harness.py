"""The real-peers harness (``.ci/peers``, ``benchmarks/peers/``) without the peers.

The peers themselves (mace-torch, nequip) live in their own environments and are run by
``bash .ci/peers``, not here.  What can be checked without them: the driver's command line,
the report's table from sample rows, the child processes' timeout and crash rows, and the
checks themselves on a tiny e3nn model.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import torchstitch as ts

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benchmarks" / "peers"


@pytest.fixture
def peers_modules(monkeypatch):
    """``import harness, checks, report`` from benchmarks/peers, as the check scripts do."""
    monkeypatch.syspath_prepend(str(PEERS))
    names = ("harness", "checks", "report")
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield lambda name: importlib.import_module(name)
    for name in names:
        sys.modules.pop(name, None)


# -- .ci/peers ------------------------------------------------------------------------------


def run_driver(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    return subprocess.run(
        ["bash", str(ROOT / ".ci" / "peers"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_driver_help_names_the_peers_and_options():
    proc = run_driver("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: bash .ci/peers [--freeze] [PEER ...]")
    for word in ("mace-torch 0.3.16", "nequip 0.19.1", "nequip-allegro 0.8.3", "--freeze"):
        assert word in proc.stdout
    assert "a run of every peer\nto benchmarks/PEERS_RESULTS.md" in proc.stdout
    assert "a run of some of them to .peers/PEERS_RESULTS.md" in proc.stdout
    assert not (ROOT / ".peers" / "rows" / "bogus.jsonl").exists()


def test_driver_refuses_an_unknown_peer_before_installing_anything():
    proc = run_driver("--help-me")
    assert proc.returncode == 2
    assert "unknown argument '--help-me' (peers: mace nequip)" in proc.stderr


def test_every_peer_has_pinned_constraints():
    pinned = {"mace": ("mace-torch==0.3.16", "e3nn==0.4.4"), "nequip": ("nequip==0.19.1", "e3nn==0.6.0")}
    for peer, pins in pinned.items():
        lines = (ROOT / ".ci" / f"peers-constraints-{peer}.txt").read_text().splitlines()
        assert "torch==2.13.0" in lines  # the local "+cpu" label is dropped, as in constraints.txt
        for pin in pins:
            assert pin in lines
        assert all(line.startswith("#") or "==" in line for line in lines if line.strip())


# -- report.py ------------------------------------------------------------------------------

LONG = "61 node(s) cannot go to target 'export': " + "; ".join(
    f"layer{i}.tp: 'script' | claimed" for i in range(60)
)
ROWS = [
    {
        "peer": "mace",
        "section": "meta",
        "machine": "CPU X, 2 cores",
        "versions": {"torch": "2.13.0", "e3nn": "0.4.4"},
    },
    {
        "peer": "mace",
        "model": "MACE",
        "section": "eager",
        "status": "ok",
        "atoms": 6,
        "edges": 22,
        "energy": -8.2635737,
        "max_force": 0.61522,
        "outputs": ["energy", "forces"],
        "config": "tiny MACE",
    },
    {
        "peer": "mace",
        "model": "MACE",
        "section": "torchscript",
        "call": "compile",
        "e3nn_s": 0.44,
        "torchstitch_s": 0.33,
        "ratio": 0.75,
        "identical_first": False,
        "identical_warm": True,
        "e3nn_stable": False,
        "max_diff": 2.2e-16,
        "vs_eager": 8.9e-16,
        "status": "ok",
    },
    {
        "peer": "mace",
        "model": "MACE",
        "section": "export",
        "stage": "compile",
        "status": "failed",
        "error": "PlanError",
        "path": "<root>",
        "message": LONG,
    },
    {
        "peer": "mace",
        "model": "LAMMPS_MACE",
        "section": "export",
        "status": "timeout",
        "message": "no result after 600 s",
    },
]


def test_report_summarises_each_model_in_one_row(peers_modules):
    report = peers_modules("report")
    document = report.render(ROWS, "2026-11-30", commit="abc1234", not_run={"nequip": "not asked for"})
    assert "on 2026-11-30 at torchstitch commit `abc1234`" in document
    assert "Machine: CPU X, 2 cores" in document
    assert "- `.peers/mace`: torch 2.13.0, e3nn 0.4.4" in document
    assert "- `.peers/nequip`: not run: not asked for" in document
    summary = document.split("## Summary", 1)[1].split("\n## ", 1)[0]
    mace, lammps = (line for line in summary.splitlines() if line.startswith(("| MACE", "| LAMMPS")))
    assert "`compile`: bit-identical once warm, 0.75x e3nn's compile time" in mace
    assert "fails: PlanError at `<root>` (compile)" in mace
    assert "fails: timeout: no result after 600 s" in lammps


def test_report_cuts_long_messages_and_keeps_the_columns(peers_modules):
    report = peers_modules("report")
    document = report.render(ROWS, "2026-11-30")
    export = document.split("## Export and AOTI through torchstitch", 1)[1].split("loaded from C++", 1)[0]
    header, _, failed, timed_out = (line for line in export.splitlines() if line.startswith("|"))
    cells = failed.split(" | ")
    assert len(cells) == header.count(" | ") + 1  # the pipes of the message are escaped
    message = next(cell for cell in cells if cell.startswith("61 node(s)"))
    assert message.endswith("…") and len(message) == report.MESSAGE_CHARS
    assert "\\|" in message
    assert timed_out.startswith("| LAMMPS_MACE | the model's own | timeout |")
    eager = document.split("## Models and eager outputs", 1)[1]
    assert "- MACE: tiny MACE" in eager
    assert "| MACE | 6 | 22 | -8.263574 | 0.6152 | energy, forces |" in eager


def test_report_main_reads_json_lines(peers_modules, tmp_path):
    report = peers_modules("report")
    rows = tmp_path / "mace.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    out = tmp_path / "PEERS.md"
    assert report.main([str(rows), "--out", str(out), "--date", "2026-12-01", "--not-run", "nequip=why"]) == 0
    text = out.read_text()
    assert text.startswith("# Real peers: integration checks")
    assert "on 2026-12-01" in text and "not run: why" in text
    assert "| MACE | the model's own | failed | compile | - | PlanError |" in text


# -- harness.py: each check in a child process with a timeout -------------------------------

SCRIPT = """
import sys, time
sys.path.insert(0, {peers!r})
import torch
from harness import Subject, main

def tiny():
    model = torch.nn.Linear(3, 1)
    outputs = lambda out: {{"energy": out.detach()}}
    return Subject("Tiny", model, lambda n: (torch.ones(n, 3),), outputs, lambda n: 0)

def fine(subject):
    return [{{"status": "ok", "atoms": subject.run(subject.model, 4)["energy"].shape[0]}}]

def hangs(subject):
    time.sleep(60)

def crashes(subject):
    raise RuntimeError("boom in the check")

CHECKS = {{"fine": (fine, 120), "hangs": (hangs, {timeout}), "crashes": (crashes, 120)}}
sys.exit(main("toy", {{"Tiny": tiny}}, CHECKS, packages=("torch", "no-such-package")))
"""


def test_each_check_runs_in_a_child_that_may_time_out_or_crash(tmp_path):
    script = tmp_path / "check_toy.py"
    script.write_text(textwrap.dedent(SCRIPT.format(peers=str(PEERS), timeout=5)))
    out = tmp_path / "rows.jsonl"
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta, fine, hangs, crashes = (json.loads(line) for line in out.read_text().splitlines())
    assert meta["section"] == "meta"
    assert meta["versions"] == {"torch": torch.__version__, "no-such-package": "-"}
    assert fine == {"peer": "toy", "model": "Tiny", "section": "fine", "status": "ok", "atoms": 4}
    assert hangs["status"] == "timeout" and hangs["message"] == "no result after 5 s"
    assert crashes["status"] == "crashed"
    assert "RuntimeError: boom in the check" in crashes["message"]


# -- checks.py on a tiny e3nn model ----------------------------------------------------------


def tiny_e3nn_subject(harness):
    e3nn = pytest.importorskip("e3nn")
    from e3nn import o3

    assert e3nn.__version__
    model = o3.Linear("2x0e + 1x1o", "1x0e")
    inputs = {n: torch.randn(n, 5, dtype=torch.float64) for n in harness.SIZES}
    return harness.Subject(
        name="Linear",
        model=model.double(),
        make_args=lambda n: (inputs[n].clone(),),
        outputs=lambda out: {"energy": out.detach()},
        edges=lambda n: 0,
    )


@pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_drop_in_check_compares_bits_and_times(peers_modules):
    harness, checks = peers_modules("harness"), peers_modules("checks")
    subject = tiny_e3nn_subject(harness)
    (row,) = checks.torchscript_drop_in(subject, "compile")
    assert row["status"] == "ok" and row["identical_warm"] and row["identical_first"]
    assert row["max_diff"] == 0.0 and row["vs_eager"] < 1e-12
    assert row["e3nn_s"] > 0 and row["torchstitch_s"] > 0
    assert row["ratio"] == pytest.approx(row["torchstitch_s"] / row["e3nn_s"])
    assert row["scripted"] >= 1


def test_export_check_records_the_stage_path_and_first_line(peers_modules, monkeypatch):
    harness, checks = peers_modules("harness"), peers_modules("checks")
    subject = tiny_e3nn_subject(harness)

    def refuse(model, **kw):
        # the form: the 6- and 9-atom sets, nothing else but the target
        assert kw.keys() == {"target", "example_inputs", "root_strategy"}
        assert kw["target"] == "export" and kw["root_strategy"] is None
        assert [args[0].shape[0] for args in kw["example_inputs"]] == list(harness.SIZES[:2])
        raise ts.PlanError("2 node(s) cannot go to target 'export'\nsecond line", path="")

    monkeypatch.setattr(checks.ts, "compile", refuse)
    (row,) = checks.export_and_aoti(subject)
    assert row == {
        "stage": "compile",
        "root_strategy": None,
        "status": "failed",
        "error": "PlanError",
        "path": "<root>",
        "message": "2 node(s) cannot go to target 'export'",
    }


def test_export_check_compares_every_size_with_eager(peers_modules, monkeypatch, tmp_path):
    harness, checks = peers_modules("harness"), peers_modules("checks")
    subject = tiny_e3nn_subject(harness)
    saved = {}
    # stand-ins for the export road: the "compiled" model is a copy, the package a dict entry
    monkeypatch.setattr(checks.ts, "compile", lambda model, **kw: model)
    monkeypatch.setattr(checks.ts, "save", lambda module, path, format: saved.setdefault(path, module))
    monkeypatch.setattr(checks.ts, "load", lambda path: saved[path])
    monkeypatch.setattr(harness, "PEERS_DIR", tmp_path)  # where the package is kept
    ran_in_cpp = []
    monkeypatch.setattr(checks, "cpp_run", lambda *args: ran_in_cpp.append(args) or {"section": "cpp"})
    row, cpp = checks.export_and_aoti(subject)
    assert row["status"] == "ok" and row["stage"] == "done"
    assert row["export_diff"] == 0.0 and row["aoti_diff"] == 0.0
    assert row["build_s"] >= 0 and row["aoti_build_s"] >= 0
    assert row["via"] == "torch.export" and row["dynamic"] is None  # no plan on the stand-in
    # the package stays for the C++ run and later checks, and C++ runs it on the unseen size
    package = tmp_path / "artifacts" / "Linear.torchstitch.pt2"
    assert list(saved) == [package]
    assert cpp == {"section": "cpp"}
    assert [(args[2], args[3]) for args in ran_in_cpp] == [(package, harness.SIZES[-1])]


def test_outputs_compare_nan_where_the_other_side_has_nan(peers_modules):
    harness = peers_modules("harness")
    nan = float("nan")
    eager = {"stress": torch.tensor([nan, 1.0])}
    assert harness.close({"stress": torch.tensor([nan, 1.0])}, eager)
    assert harness.identical({"stress": torch.tensor([nan, 1.0])}, eager)
    assert harness.max_abs_diff({"stress": torch.tensor([nan, 1.5])}, eager) == 0.5
    one_sided = {"stress": torch.tensor([0.0, 1.0])}
    assert not harness.close(one_sided, eager) and not harness.identical(one_sided, eager)
    assert harness.max_abs_diff(one_sided, eager) == float("inf")


NEQUIP_ROWS = [
    {"peer": "nequip", "model": "NequIP", "section": "export", "status": "ok", "stage": "done"}
    | {"build_s": 10.0, "aoti_build_s": 30.0, "aoti_diff": 4e-15, "via": "make_fx", "dynamic": "s0 = pos[0]"},
    {"peer": "nequip", "model": "NequIP", "section": "cpp", "status": "ok", "atoms": 12, "cpp_diff": 0.0},
    {"peer": "nequip", "model": "NequIP", "section": "export_ef", "status": "ok", "stage": "done"}
    | {
        "build_s": 8.0,
        "aoti_build_s": 27.0,
        "aoti_diff": 3e-15,
        "io": "pair_nequip inputs -> energies, forces",
    },
    {"peer": "nequip", "model": "NequIP", "section": "cpp", "status": "failed", "atoms": 12}
    | {"io": "pair_nequip inputs -> energies, forces", "error": "RuntimeError", "message": "no"},
    {"peer": "nequip", "model": "NequIP", "section": "own_aoti", "status": "ok", "build_s": 50.0},
    {"peer": "nequip", "model": "NequIP", "section": "aoti_latency", "status": "ok", "atoms": 9}
    | {"eager_ms": 3.0, "nequip_ms": 0.1, "torchstitch_ms": 0.11, "ratio": 1.1}
    | {"torchstitch_ef_ms": 0.1, "ratio_ef": 1.0},
]


def test_report_sets_torchstitch_against_nequips_own_package(peers_modules):
    report = peers_modules("report")
    document = report.render(NEQUIP_ROWS, "2026-11-30")
    summary = document.split("## Summary", 1)[1].split("\n## ", 1)[0]
    (nequip,) = (line for line in summary.splitlines() if line.startswith("| NequIP"))
    # the model's own package, and the like-for-like comparison with NequIP's
    assert "works: max abs diff 4.0e-15 at every size; C++ loader at 12 atoms: equals Python (0) |" in nequip
    assert "built in 50 s; torchstitch builds in 0.70x its time; runs in 1.00x its latency" in nequip
    versus = document.split("Against torchstitch's packages", 1)[1]
    own = "| NequIP | the model's own | 50.0 | 40.0 | 0.80x (PASS, <= 0.8x) | 9 | 3.000 | 0.100 | 0.110 | "
    like = "| NequIP | pair_nequip inputs -> energies, forces | 50.0 | 35.0 | 0.70x (PASS, <= 0.8x) | 9 | "
    assert own + "1.10x (MISS" in versus and like + "3.000 | 0.100 | 0.100 | 1.00x (PASS" in versus
    exported = document.split("## Export and AOTI through torchstitch", 1)[1]
    assert "| NequIP | the model's own | ok |" in exported
    assert "| NequIP | pair_nequip inputs -> energies, forces | ok |" in exported
    assert "| NequIP | pair_nequip inputs -> energies, forces | failed | 12 |" in exported  # its C++ row
