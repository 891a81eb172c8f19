"""docs/plugins.md documents every hookspec of core/hookspecs.py with its signature and docstring.

Run as a script (``python tests/test_docs.py``) to print the hook reference
section, generated from the hookspecs, for pasting into docs/plugins.md.
"""

import inspect
import re
import warnings
from pathlib import Path

import pytest
import torch

from torchstitch import TorchScriptDeprecationWarning
from torchstitch.core import hookspecs
from torchstitch.core.hookspecs import PROJECT

DOCS = Path(__file__).resolve().parents[1] / "docs"
_ROLE = re.compile(r":(?:class|func|meth|attr|exc|mod):`~?([^`]+)`")


def hookspec_functions():
    """``(name, function)`` of every hookspec, in file order."""
    return [
        (name, fn)
        for name, fn in vars(hookspecs).items()
        if name.startswith(f"{PROJECT}_") and hasattr(fn, f"{PROJECT}_spec")
    ]


def signature(fn) -> str:
    """``name(arg: annotation, ...) -> return``, annotations as written in the source."""
    annotations = fn.__annotations__
    params = ", ".join(f"{name}: {annotations[name]}" for name in inspect.signature(fn).parameters)
    return f"{fn.__name__}({params}) -> {annotations['return']}"


def docstring_markdown(fn) -> str:
    """The docstring with Sphinx roles and double backticks turned into Markdown code."""
    text = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", inspect.cleandoc(fn.__doc__))
    return text.replace("``", "`")


def reference_section(name, fn) -> str:
    lines = [f"### `{name}`", "", "```python", signature(fn), "```", ""]
    if getattr(fn, f"{PROJECT}_spec").get("firstresult"):
        lines += ["firstresult: the first non-`None` answer wins.", ""]
    return "\n".join(lines) + docstring_markdown(fn) + "\n"


def squash(text: str) -> str:
    return " ".join(text.split())


def sections(markdown: str) -> dict[str, str]:
    """``### `hook_name``` section text, by hook name."""
    parts = re.split(r"^### `([a-z_]+)`\s*$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


HOOKS = hookspec_functions()


def test_there_are_hookspecs():
    assert [name for name, _ in HOOKS][:2] == ["torchstitch_strategies", "torchstitch_claim"]


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=[name for name, _ in HOOKS])
def test_hook_is_documented_with_signature_and_docstring(name, fn):
    documented = sections((DOCS / "plugins.md").read_text())
    assert name in documented, f"docs/plugins.md has no '### `{name}`' section; run python {__file__}"
    section = documented[name]
    assert f"```python\n{signature(fn)}\n```" in section, f"signature of {name} in docs/plugins.md is stale"
    firstresult = bool(getattr(fn, f"{PROJECT}_spec").get("firstresult"))
    assert ("firstresult" in section) == firstresult
    assert squash(docstring_markdown(fn)) in squash(section), (
        f"docstring of {name} in docs/plugins.md is stale"
    )


def test_no_documented_hook_is_missing_from_the_hookspecs():
    documented = sections((DOCS / "plugins.md").read_text())
    assert sorted(documented) == sorted(name for name, _ in HOOKS)


def test_precision_example_runs(tmp_path):
    text = (DOCS / "plugins.md").read_text()
    section = text.split("## Changing precision or device", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    # TorchScript needs the source of the classes: run the block from a real file
    script = tmp_path / "precision_example.py"
    script.write_text(block)
    namespace = {"__name__": "precision_example"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TorchScriptDeprecationWarning)
        exec(compile(block, str(script), "exec"), namespace)
    model, compiled = namespace["model"], namespace["compiled"]
    assert getattr(compiled, "2").inner.weight.dtype == torch.bfloat16  # the bf16 node's copy
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.randn(6, 3)
    torch.testing.assert_close(compiled(x), model(x), atol=5e-2, rtol=5e-2)


def test_docs_link_to_each_other():
    assert "(rules.md)" in (DOCS / "plugins.md").read_text()
    rules = (DOCS / "rules.md").read_text()
    assert "| `override` |" in rules and "| `default` |" in rules


if __name__ == "__main__":
    print("\n".join(reference_section(name, fn) for name, fn in HOOKS))
