"""The built-in ``torchscript`` artifact format: ``torch.jit.save`` with the plan as an extra file.

How ``ts.save``/``ts.load`` choose a format, write atomically and read the plan
back: tests/core/test_serialization.py; here: what this format accepts, refuses
and writes.
"""

import pytest
import torch
from modules import HoldsIgnored, SignSwitch, TracedSigmoid, compile_scripted
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]


# no `from __future__ import annotations`: TorchScript reads these classes


def test_torch_jit_save_still_works_on_a_module_carrying_a_plan(tmp_path):
    model = SignSwitch()
    x = torch.rand(4, 3) + 0.1
    compiled = ts.script(model, example_inputs=(x,))
    torch.jit.save(compiled, str(tmp_path / "jit.pt"))
    reloaded = torch.jit.load(str(tmp_path / "jit.pt"))
    torch.testing.assert_close(reloaded(x), model(x))
    assert ts.plan_of(reloaded) is None


def test_trace_root_round_trip(tmp_path):
    model = TracedSigmoid()
    x = torch.randn(4, 3)
    compiled = ts.trace(model, (x,))
    path = tmp_path / "t.pt"
    ts.save(compiled, path)
    torch.testing.assert_close(ts.load(path).module(x), model(x))


def test_plain_torch_jit_save_loads_with_plan_none(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    artifact = ts.load(path)
    assert artifact.plan is None
    assert artifact.format == "torchscript"
    x = torch.randn(5, 3)
    torch.testing.assert_close(artifact.module(x), model(x))


def test_format_options_the_format_does_not_take_are_artifact_errors(tmp_path):
    compiled = ts.script(torch.nn.Linear(2, 2))
    with pytest.raises(ts.ArtifactError, match=r"format 'torchscript' takes no options, got \['level'\]"):
        ts.save(compiled, tmp_path / "m.pt", options={"level": 3})
    assert not (tmp_path / "m.pt").exists()


def test_saving_an_ignored_method_call_names_the_module_and_writes_nothing(tmp_path, watch):
    model = HoldsIgnored()
    check = watch(model)
    x = torch.randn(2, 3)
    result = compile_scripted(model, x)
    torch.testing.assert_close(result.module(x), model(x))  # it runs: the method stays in Python
    path = tmp_path / "m.pt"
    with pytest.raises(ts.ArtifactError) as info:
        ts.save(result, path)
    err = info.value
    assert err.path == "block.1"
    assert "'block.1'" in str(err)
    assert "'python_only'" in str(err) and "@torch.jit.ignore" in str(err)
    assert isinstance(err.__cause__, RuntimeError)
    assert "Could not export Python function call" in str(err.__cause__)
    assert list(tmp_path.iterdir()) == []  # no half-written archive, no temporary file
    check()


def test_the_archive_is_a_plain_torchscript_archive_carrying_the_plan(tmp_path):
    model = SignSwitch()
    x = torch.rand(4, 3) + 0.1
    result = compile_scripted(model, x)
    path = tmp_path / "m.pt"
    ts.save(result, path, format="torchscript")
    # what a libtorch host (or torch.jit.load) reads: the model, and the plan beside it
    extra = {"torchstitch/plan.json": ""}
    reloaded = torch.jit.load(str(path), _extra_files=extra)
    for sample in (x, -x):
        torch.testing.assert_close(reloaded(sample), model(sample))
    assert ts.Plan.from_json(extra["torchstitch/plan.json"]) == result.plan


def test_a_root_left_in_python_is_refused_naming_the_format(tmp_path, watch):
    model = SignSwitch()
    check = watch(model)
    compiled = ts.compile(model, example_inputs=(torch.rand(4, 3) + 0.1,))
    assert isinstance(compiled.traced, torch.jit.ScriptModule)  # compiled, but not at the root
    with pytest.raises(
        ts.ArtifactError, match=r"format 'torchscript' cannot save a SignSwitch \(a TorchScript"
    ):
        ts.save(compiled, tmp_path / "m.pt", format="torchscript")
    assert list(tmp_path.iterdir()) == []
    check()


def test_blocking_the_format_leaves_nothing_to_save_or_load_torchscript(tmp_path):
    compiled = ts.script(nn.Linear(2, 2))
    path = tmp_path / "m.pt"
    with pytest.raises(ts.ArtifactError, match="no artifact format accepts"):
        ts.save(compiled, path, plugins=["no:format.torchscript"])
    ts.save(compiled, path)
    with pytest.raises(ts.ArtifactError, match="is not an artifact any format can read"):
        ts.load(path, plugins=["no:format.torchscript"])
    x = torch.randn(3, 2)
    torch.testing.assert_close(ts.load(path)(x), compiled(x))
