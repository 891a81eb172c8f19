"""Sphinx configuration of torchstitch's documentation site (built by ``bash .ci/docs``).

Sphinx rather than MkDocs: the docstrings are written in Sphinx field lists
(``:param x:``, ``:class:`Plan```), which autodoc reads as they are; myst-parser
keeps the existing Markdown pages (``docs/*.md``, also read on GitHub) as they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))  # the project's own small extension

from torchstitch import __version__  # noqa: E402

project = "torchstitch"
author = "the torchstitch authors"
copyright = "the torchstitch authors"  # noqa: A001 (Sphinx's name)
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "torchstitch_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# Markdown: GitHub-style heading anchors (deploying.md#choosing-an-artifact), tables, colons
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# Every reference must resolve (warnings are errors in .ci/docs); names of other
# projects (torch, pluggy, attrs, the standard library) are not documented here.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(torch|pluggy|attrs|attr|typing|collections|types|os|pathlib|argparse|logging|enum)\b.*"),
    ("py:.*", r"(Any|Callable|Iterable|Iterator|Mapping|Sequence|Literal|TypeAlias|Self|NoneType)"),
    ("py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|frozenset|type|object|None)"),
    ("py:.*", r"(Exception|BaseException|ValueError|TypeError|OSError|RuntimeError|UserWarning)"),
    ("py:.*", r"(NotImplementedError|DeprecationWarning|FutureWarning|Warning)"),
    ("py:.*", r"(Tensor|Module|ScriptModule|GraphModule|ExportedProgram|Dim|PluginManager)(\..*)?"),
    # private helper types that public signatures name
    ("py:.*", r"(torchstitch\.core\.[a-z_]+\.)?(TracingInputs|PluginSet|Tolerance|CompiledWithPlan|R)"),
]

# one parameter a line once a signature is long (compile() takes twenty)
python_maximum_signature_line_length = 88
# quotes and ellipses only: "--verbose" in the generated CLI reference stays two dashes
smartquotes_action = "qe"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# undoc-members: a public member without a docstring shows, and the extension reports it
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"torchstitch {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
