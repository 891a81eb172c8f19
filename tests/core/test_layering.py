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


def _private_imports(folder: Path) -> list[str]:
    """Lines of ``folder``'s modules importing torchstitch.core (absolutely or relatively)."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if text.startswith(("from ", "import ")) and (
                "torchstitch.core" in text or text.startswith("from .") and ".core" in text.split()[1]
            ):
                found.append(f"{path.name}:{number}: {text}")
    return found


def test_plugins_import_only_the_public_api():
    # built-ins, the e3nn/export/inductor plugins: `from torchstitch import ...` and the documented
    # plugin modules (torchstitch.plugins.toolkit, torchstitch.plugins.graph_modules), like a third party
    # toolkit.py is the plugins' door to the core; torchscript/api.py is re-exported by the facade
    # (ts.script, ts.trace), so it cannot import the facade without a cycle
    public_modules = {"toolkit.py", "api.py"}
    offenders = [
        line for line in _private_imports(PACKAGE / "plugins") if line.split(":")[0] not in public_modules
    ]
    assert offenders == []


def test_the_example_plugin_imports_only_the_public_api():
    example = PACKAGE / "examples" / "torchstitch-example-plugin"
    if not example.is_dir():  # an installed package has no examples: nothing to check there
        return
    assert _private_imports(example) == []


def test_private_imports_are_found(tmp_path):
    # the two checks above can fail: relative and absolute imports of the core are both seen
    (tmp_path / "plugin.py").write_text(
        "from ...core.engine import make_shell\nimport torchstitch.core.ir\nfrom torchstitch import Node\n"
    )
    assert [line.split(": ")[1] for line in _private_imports(tmp_path)] == [
        "from ...core.engine import make_shell",
        "import torchstitch.core.ir",
    ]
