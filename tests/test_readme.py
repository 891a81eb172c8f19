"""The README's quick start runs as written."""

import pathlib
import re

import pytest
import torch

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


def quick_start_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_quick_start_runs(tmp_path, monkeypatch):
    blocks = quick_start_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    # TorchScript needs the source of the classes: write the blocks to a real file
    script = tmp_path / "quick_start.py"
    script.write_text("\n".join(blocks))
    namespace = {"__name__": "quick_start"}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    assert (tmp_path / "model.pt").exists()
    result = namespace["result"]
    assert result.plan["features"].strategy == "trace"
    assert result.plan["features"].claim.kind.name == "OVERRIDE"
    x = torch.randn(5, 3)
    torch.testing.assert_close(namespace["compiled"](x), namespace["model"](x))
