"""The README's quick start runs as written."""

import pathlib
import re

import pytest
import torch

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


def section_blocks(title: str) -> list[str]:
    text = README.read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def quick_start_blocks() -> list[str]:
    return section_blocks("Quick start")


def run_from_file(blocks: list[str], path) -> dict:
    """Run the blocks as one script, from a real file: TorchScript needs the classes' source."""
    path.write_text("\n".join(blocks))
    namespace = {"__name__": path.stem}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_quick_start_runs(tmp_path, monkeypatch):
    blocks = quick_start_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace = run_from_file(blocks, tmp_path / "quick_start.py")
    assert (tmp_path / "model.pt").exists()
    result = namespace["result"]
    assert result.plan["features"].strategy == "trace"
    assert result.plan["features"].claim.kind.name == "OVERRIDE"
    x = torch.randn(5, 3)
    torch.testing.assert_close(namespace["compiled"](x), namespace["model"](x))


def test_options_example_runs(tmp_path):
    (block,) = section_blocks("Options")
    namespace = run_from_file([block], tmp_path / "options.py")
    heads, compiled = namespace["heads"], namespace["compiled"]
    assert isinstance(compiled, torch.jit.ScriptModule)
    x = torch.randn(3, 3)
    out, expected = compiled(x), heads(x)
    assert sorted(out) == ["charge", "energy"]
    for key in expected:
        torch.testing.assert_close(out[key], expected[key], atol=1e-6, rtol=1e-5)
