"""ts.save / ts.load: the artifact runs like the compiled model and carries its plan."""

import importlib

import pytest
import torch
from modules import HoldsIgnored, SignSwitch, TracedSigmoid, compile_scripted
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]


def inputs():
    return [torch.rand(4, 3) + 0.1, -torch.rand(4, 3) - 0.1, torch.randn(2, 3)]


@pytest.mark.parametrize("how", ["ts.save", "result.save", "module+plan"])
def test_save_load_round_trip(tmp_path, how):
    model = SignSwitch()
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
    model = SignSwitch()
    result = compile_scripted(model, torch.rand(4, 3) + 0.1)
    path = str(tmp_path / "m.pt")
    ts.save(result, path)
    artifact = ts.load(path)
    x = torch.randn(3, 3)
    torch.testing.assert_close(artifact.module(x), model(x))


def without_outcomes(data):
    """A plan's JSON document with every node's outcome removed (what ``ts.plan`` gives)."""
    data = dict(data, outcome=None)
    data["children"] = [without_outcomes(child) for child in data["children"]]
    return data


def plugins_for(how):
    """The plugins a call needs beyond the built-ins (core tests load no entry points)."""
    return [importlib.import_module("torchstitch.plugins.export")] if how == "export" else []


def compile_functionally(how, model, x):
    """The compiled module, and what ``ts.plan`` previews for the same call (if it can)."""
    if how == "script":
        return ts.script(model, example_inputs=(x,)), None
    if how == "trace":
        return ts.trace(model, (x,)), None
    rules = [ts.Rule("script" if how == "compile" else "export", path="")]
    plugins = plugins_for(how)
    return (
        ts.compile(model, example_inputs=(x,), rules=rules, plugins=plugins),
        ts.plan(model, rules=rules, plugins=plugins),
    )


@pytest.mark.parametrize(
    ("how", "fmt"),
    [("script", "torchscript"), ("trace", "torchscript"), ("compile", "torchscript"), ("export", "export")],
)
def test_the_plan_travels_with_a_functionally_compiled_module(tmp_path, how, fmt):
    model = TracedSigmoid() if how in ("trace", "export") else SignSwitch()
    x = torch.rand(4, 3) + 0.1
    compiled, preview = compile_functionally(how, model, x)
    plan = ts.plan_of(compiled)
    assert plan is not None
    assert plan.root.outcome is not None  # the plan the compile used, with its outcomes
    assert plan.root.strategy == ("export" if how == "export" else "script" if how != "trace" else "trace")
    if preview is not None:
        assert without_outcomes(plan.to_dict()["root"]) == without_outcomes(preview.to_dict()["root"])

    path = tmp_path / "m.pt2"
    plugins = plugins_for(how)
    ts.save(compiled, path, plugins=plugins)
    artifact = ts.load(path, plugins=plugins)
    assert artifact.format == fmt
    assert artifact.metadata["plan"] == "embedded"
    assert artifact.plan is not None
    assert artifact.plan.to_json() == plan.to_json()
    torch.testing.assert_close(artifact(x), model(x))
    # the loaded module carries the plan too: saving it again keeps it
    ts.save(artifact.module, tmp_path / "again.pt2", plugins=plugins)
    assert ts.load(tmp_path / "again.pt2", plugins=plugins).plan == plan


def test_the_caller_model_carries_no_plan():
    model = SignSwitch()
    before = dict(model.__dict__)
    compiled = ts.script(model, example_inputs=(torch.rand(4, 3) + 0.1,))
    assert ts.plan_of(compiled) is not None
    assert ts.plan_of(model) is None
    assert model.__dict__.keys() == before.keys()


def test_a_copy_or_a_rescripted_module_has_no_plan_and_saves_saying_so(tmp_path):
    import copy

    model = SignSwitch()
    x = torch.rand(4, 3) + 0.1
    compiled = ts.script(model, example_inputs=(x,))
    python_root = ts.compile(model, example_inputs=(x,))  # the root stays in Python
    assert ts.plan_of(python_root) is not None
    for other in (
        copy.deepcopy(compiled),
        copy.deepcopy(python_root),
        torch.jit.script(torch.nn.Linear(3, 3)),
    ):
        assert ts.plan_of(other) is None
    path = tmp_path / "copy.pt"
    ts.save(copy.deepcopy(compiled), path)
    artifact = ts.load(path)
    assert artifact.plan is None
    assert artifact.metadata["plan"].startswith("none: ")
    torch.testing.assert_close(artifact(x), model(x))


class Held:
    """Not a CompileResult, but shaped like one: a compiled module and its plan."""

    def __init__(self, module, plan):
        self.module, self.plan = module, plan


def test_save_takes_anything_with_a_compiled_module_and_its_plan(tmp_path):
    x = torch.rand(4, 3) + 0.1
    result = compile_scripted(SignSwitch(), x)
    ts.save(Held(result.module, result.plan), tmp_path / "held.pt")
    artifact = ts.load(tmp_path / "held.pt")
    assert artifact.plan == result.plan
    torch.testing.assert_close(artifact(x), result.module(x))
    # an explicit plan= still wins over the held one
    other = ts.plan(SignSwitch(), rules=[ts.Rule("script", path="")])
    ts.save(Held(result.module, result.plan), tmp_path / "other.pt", plan=other)
    assert ts.load(tmp_path / "other.pt").plan == other


@pytest.mark.parametrize(
    "held", [Held(nn.Linear(2, 2), "a plan"), Held("a module", None)], ids=["plan", "module"]
)
def test_saving_something_shaped_wrong_is_artifact_error(tmp_path, held):
    with pytest.raises(ts.ArtifactError, match=r"a CompileResult, got a [\w.]*Held$"):
        ts.save(held, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("obj", [{"weight": torch.zeros(2)}, "model.pt", None, torch.zeros(3)])
def test_saving_what_is_not_a_module_is_artifact_error_naming_the_type(tmp_path, obj):
    path = tmp_path / "m.pt"
    with pytest.raises(ts.ArtifactError, match=rf"got a ([\w.]+\.)?{type(obj).__qualname__}\b") as info:
        ts.save(obj, path)
    assert "CompileResult" in str(info.value)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_saving_python_root_is_artifact_error(tmp_path, watch):
    model = SignSwitch()
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
        ts.save(SignSwitch(), tmp_path / "m.pt")
    assert "'<root>'" in str(info.value)


def test_unknown_format_is_artifact_error(tmp_path):
    compiled = ts.script(SignSwitch(), example_inputs=(torch.rand(4, 3) + 0.1,))
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


# --------------------------------------------------------------------------
# failures while writing: ArtifactError (an OSError) naming the path, nothing half-written
# --------------------------------------------------------------------------


def test_a_failed_save_leaves_an_existing_file_as_it_was(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"the previous model")
    result = compile_scripted(HoldsIgnored(), torch.randn(2, 3))
    with pytest.raises(ts.ArtifactError):
        ts.save(result, path)
    assert path.read_bytes() == b"the previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


@pytest.mark.parametrize(
    ("where", "errno_name", "reason"),
    [
        ("missing/m.pt", "ENOENT", "the directory {parent!r} does not exist"),
        ("missing/deeper/m.pt", "ENOENT", "the directory {parent!r} does not exist"),
        ("a-file/m.pt", "ENOTDIR", "{file!r} is a file, not a directory"),
        ("a-file/below/m.pt", "ENOTDIR", "{file!r} is a file, not a directory"),
        ("a-dir", "EISDIR", "it is a directory"),
    ],
)
def test_saving_where_no_file_can_be_is_an_os_error_naming_the_path(tmp_path, where, errno_name, reason):
    import errno

    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-dir").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    compiled = ts.script(nn.Linear(3, 3))
    path = tmp_path / where
    with pytest.raises(OSError) as info:
        ts.save(compiled, path)
    err = info.value
    assert isinstance(err, ts.ArtifactError)
    expected = reason.format(parent=str(path.parent), file=str(tmp_path / "a-file"))
    assert str(err) == f"cannot save to {str(path)!r}: {expected}"
    assert (err.errno, err.filename) == (getattr(errno, errno_name), str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_missing_file_to_load_is_an_os_error(tmp_path):
    import errno

    path = tmp_path / "missing.pt"
    with pytest.raises(OSError) as info:
        ts.load(path)
    assert isinstance(info.value, ts.ArtifactError)
    assert (info.value.errno, info.value.filename) == (errno.ENOENT, str(path))
    assert str(info.value) == f"no such file: {str(path)!r}"


class RecordingFormat:
    """An artifact format that writes its path into the file, or fails with a torch-like error."""

    name = "recording-format"

    def __init__(self, fail=False):
        self.fail = fail
        self.paths = []

    @ts.hookimpl
    def torchstitch_artifact_formats(self):
        def save(module, path, extra, options):
            self.paths.append(path)
            with open(path, "w") as f:
                f.write(path)
            if self.fail:
                raise RuntimeError("the writer gave up half way\nwith details below")

        return [ts.ArtifactFormat("recording", lambda m: True, save, lambda p, m: (None, {}))]


def test_formats_write_beside_the_target_under_a_name_ending_with_its_own(tmp_path):
    fmt = RecordingFormat()
    path = tmp_path / "model.pt2"
    ts.save(ts.script(nn.Linear(3, 3)), path, format="recording", plugins=[fmt])
    (written,) = fmt.paths
    assert written != str(path)
    assert written.startswith(str(tmp_path)) and written.endswith("model.pt2")  # aoti needs *.pt2
    assert path.read_text() == written
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt2"]


def test_a_format_that_raises_is_an_artifact_error_naming_it_and_the_path(tmp_path):
    path = tmp_path / "model.pt"
    with pytest.raises(ts.ArtifactError) as info:
        ts.save(ts.script(nn.Linear(3, 3)), path, format="recording", plugins=[RecordingFormat(fail=True)])
    text = str(info.value)
    assert "'recording'" in text and repr(str(path)) in text
    assert "RuntimeError: the writer gave up half way" in text
    assert isinstance(info.value.__cause__, RuntimeError)
    assert list(tmp_path.iterdir()) == []


def _torchscript_with_extra(path, plan_text, meta_text='{"format": "torchscript"}'):
    from torchstitch.core.serialization import META_FILE, PLAN_FILE

    extra = {META_FILE: meta_text, PLAN_FILE: plan_text}
    torch.jit.save(torch.jit.script(nn.Linear(3, 3)), str(path), _extra_files=extra)


@pytest.mark.parametrize(
    "plan_text", ["{not json", '{"torchstitch_plan": 99, "root": {}}', '{"torchstitch_plan": 1}']
)
def test_an_unreadable_plan_is_an_artifact_error_naming_the_file(tmp_path, plan_text):
    path = tmp_path / "m.pt"
    _torchscript_with_extra(path, plan_text)
    with pytest.raises(ts.ArtifactError) as info:
        ts.load(path)
    assert repr(str(path)) in str(info.value) and "plan" in str(info.value)
    assert isinstance(info.value.__cause__, (ValueError, KeyError))


def test_unreadable_metadata_falls_back_to_trying_every_format(tmp_path):
    path = tmp_path / "m.pt"
    _torchscript_with_extra(path, "", meta_text="[not, json")
    artifact = ts.load(path)
    assert artifact.format == "torchscript" and artifact.plan is None
    x = torch.randn(2, 3)
    assert artifact(x).shape == (2, 3)


def test_a_file_no_format_reads_chains_the_last_formats_error(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(ts.ArtifactError) as info:
        ts.load(path)
    assert repr(str(path)) in str(info.value)
    assert info.value.__cause__ is not None
    assert type(info.value.__cause__).__name__ in str(info.value)
