"""The documentation site builds with warnings as errors (``bash .ci/docs``), and the code
examples of its pages run as written.

Each page's ```python blocks run in order as one script, from a file (TorchScript reads the
classes' source), in a fresh interpreter in a temporary folder. The pages that existed
before the site (deploying.md, plugins.md, rules.md) have their own tests, and the
getting-started page includes the README's quick start, which tests/test_readme.py runs.
"""

from __future__ import annotations

import html.parser
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torchstitch.core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: the pages written for the site, whose every Python block runs here
SITE_PAGES = sorted(
    path.relative_to(DOCS).as_posix()
    for folder in ("tutorials", "how-to", "reference", "explanation")
    for path in (DOCS / folder).glob("*.md")
) + ["getting-started.md", "index.md"]


#: every hookspec, and how many are firstresult
HOOKSPECS = [name for name in dir(hookspecs) if name.startswith("torchstitch_")]
FIRSTRESULT = sum(
    bool(getattr(getattr(hookspecs, name), "torchstitch_spec", {}).get("firstresult")) for name in HOOKSPECS
)


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.M | re.S)


def run_script(code: str, folder: Path) -> subprocess.CompletedProcess[str]:
    script = folder / "example.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, "-W", "ignore", str(script)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )


def pages_with_examples() -> list[str]:
    return [page for page in SITE_PAGES if python_blocks((DOCS / page).read_text())]


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_examples())
def test_page_examples_run_as_written(page, tmp_path):
    run = run_script("\n".join(python_blocks((DOCS / page).read_text())), tmp_path)
    assert run.returncode == 0, f"docs/{page}: {run.stderr[-3000:]}"


def test_a_broken_example_fails(tmp_path):
    """The runner above reports an example that raises (it is not a test that cannot fail)."""
    run = run_script("import torchstitch as ts\nts.Rule('script')\n", tmp_path)
    assert run.returncode != 0 and "PlanError" in run.stderr


def test_the_site_has_examples_to_run():
    assert {"tutorials/strategy-plugin.md", "how-to/options.md"} <= set(pages_with_examples())


class _Links(html.parser.HTMLParser):
    """The local links of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href and not re.match(r"[a-z]+:|#", href):
            self.links.append(href)


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
    out = tmp_path / "html"
    build = subprocess.run(
        ["bash", str(ROOT / ".ci" / "docs"), str(out)], capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, build.stderr[-5000:]
    for page in ("index", "reference/api", "reference/cli", "reference/hooks", "deploying", "benchmarks"):
        assert (out / f"{page}.html").is_file(), page
    api = (out / "reference" / "api.html").read_text()
    assert 'id="torchstitch.compile"' in api and 'id="torchstitch.Plan.render"' in api
    hooks = (out / "reference" / "hooks.html").read_text()
    for name in HOOKSPECS:
        assert f'id="torchstitch.core.hookspecs.{name}"' in hooks, name
    assert hooks.count("the first answer other than") == FIRSTRESULT
    cli = (out / "reference" / "cli.html").read_text()
    assert "torchstitch plan" in cli and "--probe" in cli
    assert "torchstitch cache info" in cli  # subcommands of subcommands too
    assert "list-table" not in cli and cli.count("<table") >= 5  # generated reST, parsed as reST
    # every local link of every page points at a file of the site
    for page in out.rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text())
        for href in parser.links:
            target = (page.parent / href.split("#")[0]).resolve()
            assert target.exists(), f"{page.relative_to(out)} links to missing {href}"
