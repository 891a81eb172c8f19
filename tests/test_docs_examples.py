"""The code of docs/deploying.md's "Moving a TorchScript deployment to AOTInductor" runs as
written: its Python blocks, in order, as one script (TorchScript reads the class's source
from its file), in a temporary folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOYING = Path(__file__).resolve().parents[1] / "docs" / "deploying.md"
SECTION = "## Moving a TorchScript deployment to AOTInductor"


def python_blocks(markdown: str, heading: str) -> list[str]:
    """The ```python blocks of the section under ``heading`` (up to the next ``## ``)."""
    start = markdown.index(heading) + len(heading)
    end = markdown.find("\n## ", start)
    section = markdown[start : None if end < 0 else end]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S)


def test_the_section_has_the_before_and_after_blocks():
    blocks = python_blocks(DEPLOYING.read_text(), SECTION)
    assert len(blocks) == 3
    assert "ts.script(model)" in blocks[1]
    assert 'target="export"' in blocks[2] and 'format="aoti"' in blocks[2]


@pytest.mark.slow
def test_moving_a_torchscript_deployment_runs_as_written(tmp_path):
    script = tmp_path / "deploying_example.py"
    script.write_text("\n".join(python_blocks(DEPLOYING.read_text(), SECTION)))
    run = subprocess.run(
        [sys.executable, "-W", "ignore", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "potential.pt").is_file() and (tmp_path / "potential.pt2").is_file()
    assert "dynamic: s0 = pos[0]; s1 = edge_index[1]" in run.stdout
    assert "via: make_fx" in run.stdout
    assert "'script' claim retargeted to 'export'" in run.stdout
