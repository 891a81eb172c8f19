"""core/ is strategy-neutral: TorchScript lives in its plugin, not in the engine."""

from __future__ import annotations

from pathlib import Path

import torchstitch
from torchstitch.core.plugin_manager import BUILTIN_PLUGINS

PACKAGE = Path(torchstitch.__file__).resolve().parent
CORE = PACKAGE / "core"


def _lines_mentioning(text: str, folder: Path) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(folder.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if text in line
    ]


def test_core_never_mentions_torch_jit():
    # TorchScript calls, types and even docstrings naming them belong to plugins/builtin/torchscript
    assert _lines_mentioning("torch.jit", CORE) == []


def test_the_torchscript_plugin_does_mention_it():
    # the check above looks where it should: the plugin that owns TorchScript is found by it
    assert _lines_mentioning("torch.jit", PACKAGE / "plugins" / "builtin" / "torchscript")


def test_builtin_plugins_live_under_plugins_builtin():
    for name, target in BUILTIN_PLUGINS:
        assert target.startswith("torchstitch.plugins.builtin."), name
