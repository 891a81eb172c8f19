"""ts.save / ts.load: the artifact runs like the compiled model and carries its plan."""

import pytest
import torch
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]


@ts.compile_mode("trace")
class Traced(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.sigmoid(self.lin(x))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.traced = Traced()
        self.other = nn.Linear(3, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.traced(x) * 2.0
        return self.other(x)


def compile_scripted(model, x):
    return ts.Engine(rules=[ts.Rule("script", path="")]).compile(model, example_inputs=(x,))


def inputs():
    return [torch.rand(4, 3) + 0.1, -torch.rand(4, 3) - 0.1, torch.randn(2, 3)]


@pytest.mark.parametrize("how", ["ts.save", "result.save", "module+plan"])
def test_save_load_round_trip(tmp_path, how):
    model = Model()
    result = compile_scripted(model, torch.rand(4, 3) + 0.1)
    assert isinstance(result.module, torch.jit.ScriptModule)
    path = tmp_path / "model.pt"
    if how == "ts.save":
        ts.save(result, path)
    elif how == "result.save":
        result.save(str(path))
    else:
        ts.save(result.module, path, plan=result.plan)
    assert path.exists()

    artifact = ts.load(path)
    assert isinstance(artifact, ts.Artifact)
    assert artifact.format == "torchscript"
    assert artifact.metadata["torch_version"] == torch.__version__
    assert artifact.metadata["torchstitch_version"] == ts.__version__
    for x in inputs():
        torch.testing.assert_close(artifact.module(x), result.module(x))
        torch.testing.assert_close(artifact.module(x), model(x))
        torch.testing.assert_close(artifact(x), model(x))

    assert artifact.plan is not None
    assert artifact.plan.to_json() == result.plan.to_json()
    assert artifact.plan == result.plan
    assert artifact.plan["traced"].outcome.inputs_source == "inputs.recorded"
    assert artifact.plan["traced"].strategy == "trace"
    assert artifact.plan[""].strategy == "script"


def test_save_accepts_str_path(tmp_path):
    model = Model()
    result = compile_scripted(model, torch.rand(4, 3) + 0.1)
    path = str(tmp_path / "m.pt")
    ts.save(result, path)
    artifact = ts.load(path)
    x = torch.randn(3, 3)
    torch.testing.assert_close(artifact.module(x), model(x))


def test_save_module_without_plan_loads_with_plan_none(tmp_path):
    model = Model()
    compiled = ts.script(model, example_inputs=(torch.rand(4, 3) + 0.1,))
    path = tmp_path / "m.pt"
    ts.save(compiled, path)
    artifact = ts.load(path)
    assert artifact.plan is None
    assert artifact.format == "torchscript"
    x = torch.randn(3, 3)
    torch.testing.assert_close(artifact.module(x), model(x))


def test_trace_root_round_trip(tmp_path):
    model = Traced()
    x = torch.randn(4, 3)
    compiled = ts.trace(model, (x,))
    path = tmp_path / "t.pt"
    ts.save(compiled, path)
    torch.testing.assert_close(ts.load(path).module(x), model(x))


def test_saving_python_root_is_artifact_error(tmp_path, watch):
    model = Model()
    check = watch(model)
    result = ts.Engine().compile(model, example_inputs=(torch.rand(4, 3) + 0.1,))
    assert not isinstance(result.module, torch.jit.ScriptModule)  # root stayed in Python
    assert isinstance(result.module.traced, torch.jit.ScriptModule)
    path = tmp_path / "m.pt"
    with pytest.raises(ts.ArtifactError) as info:
        ts.save(result, path)
    assert info.value.path == ""
    assert "'<root>'" in str(info.value)
    assert not path.exists()
    with pytest.raises(ts.ArtifactError):
        result.save(str(path))
    assert not path.exists()
    check()


def test_saving_uncompiled_module_is_artifact_error(tmp_path):
    with pytest.raises(ts.ArtifactError) as info:
        ts.save(Model(), tmp_path / "m.pt")
    assert "'<root>'" in str(info.value)


def test_unknown_format_is_artifact_error(tmp_path):
    compiled = ts.script(Model(), example_inputs=(torch.rand(4, 3) + 0.1,))
    with pytest.raises(ts.ArtifactError, match="format"):
        ts.save(compiled, tmp_path / "m.pt", format="onnx")


@pytest.mark.parametrize("kind", ["text", "state_dict", "empty"])
def test_loading_a_non_artifact_is_artifact_error(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "text":
        path.write_bytes(b"this is not a model\n")
    elif kind == "state_dict":
        torch.save(nn.Linear(2, 2).state_dict(), path)
    else:
        path.write_bytes(b"")
    with pytest.raises(ts.ArtifactError) as info:
        ts.load(path)
    assert str(path) in str(info.value)


def test_loading_a_missing_file_raises(tmp_path):
    path = tmp_path / "missing.pt"
    with pytest.raises((ts.ArtifactError, FileNotFoundError)) as info:
        ts.load(path)
    assert str(path) in str(info.value)


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
