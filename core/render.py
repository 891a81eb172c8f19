"""Presentation of a plan: strategy colours (ANSI for terminals, Graphviz for DOT) and the DOT writer.

:meth:`Plan.render(color=True) <torchstitch.Plan.render>` and
:meth:`Plan.to_dot() <torchstitch.Plan.to_dot>` use this module; nothing here
changes a plan.  Colours are chosen by strategy name, so the same strategy has
the same colour in the text tree and in the graph, and a plugin's strategy gets
a stable colour of its own (from a checksum of its name, never ``hash()``,
which changes between processes).
"""

from __future__ import annotations

import logging
import os
import zlib
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .ir import Node, Plan

__all__ = ["ansi", "ansi_code", "dot_color", "plan_to_dot", "stream_wants_color"]

log = logging.getLogger(__name__)

#: ANSI SGR codes of the built-in strategies; ``None`` is an inheriting node
_ANSI_BUILTIN: dict[str | None, str] = {
    "script": "32",  # green
    "trace": "36",  # cyan
    "unsupported": "31",  # red
    None: "2",  # dim
}
#: for strategies plugins register, chosen by a checksum of the name
_ANSI_PALETTE = ("35", "33", "94", "95", "92", "96")

#: Graphviz fill colours (X11 names), same scheme as the ANSI ones
_DOT_BUILTIN: dict[str | None, str] = {
    "script": "palegreen",
    "trace": "lightblue",
    "unsupported": "lightcoral",
    None: "white",
}
_DOT_PALETTE = ("plum", "khaki", "lightskyblue", "thistle", "darkseagreen1", "paleturquoise")

_RESET = "\x1b[0m"


def _pick(strategy: str | None, builtin: dict[str | None, str], palette: tuple[str, ...]) -> str:
    if strategy in builtin:
        return builtin[strategy]
    assert strategy is not None
    return palette[zlib.crc32(strategy.encode()) % len(palette)]


def ansi_code(strategy: str | None) -> str:
    """The ANSI SGR parameter for ``strategy`` (``None``: an inheriting node)."""
    return _pick(strategy, _ANSI_BUILTIN, _ANSI_PALETTE)


def ansi(text: str, strategy: str | None) -> str:
    """``text`` wrapped in the ANSI colour of ``strategy``."""
    return f"\x1b[{ansi_code(strategy)}m{text}{_RESET}"


def dot_color(strategy: str | None) -> str:
    """The Graphviz fill colour of ``strategy`` (``None``: an inheriting node)."""
    return _pick(strategy, _DOT_BUILTIN, _DOT_PALETTE)


def stream_wants_color(stream: TextIO) -> bool:
    """Whether to colour output written to ``stream``: a terminal, and ``NO_COLOR`` unset.

    See https://no-color.org: any non-empty ``NO_COLOR`` turns colour off.
    """
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _dot_string(text: str) -> str:
    """A DOT double-quoted string; ``\\n`` in ``text`` becomes a centred line break."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _dot_label(node: Node) -> str:
    from .ir import _describe_outcome

    lines = ["<root>" if node.path == "" else node.name, node.type_name, node.describe()]
    if node.outcome is not None:
        lines.append(_describe_outcome(node.outcome))
    return "\n".join(lines)


def plan_to_dot(plan: Plan, *, name: str = "plan") -> str:
    """Graphviz DOT source for ``plan``: one box per node, filled by strategy.

    Edges go from parent to child; a module reachable by several paths gets a
    dashed edge to the node it is shared with.  A legend lists the strategies
    that occur.  The output is deterministic.

    :param plan: the plan to draw (compiled or not).
    :param name: the graph's name.
    """
    ids = {node.path: f"n{i}" for i, node in enumerate(plan.walk())}
    out = [
        f"digraph {_dot_string(name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [color="gray40"];',
    ]
    used: dict[str | None, None] = {}
    for node in plan.walk():
        strategy = node.strategy
        used.setdefault(strategy, None)
        attrs = [
            f"label={_dot_string(_dot_label(node))}",
            f"fillcolor={_dot_string(dot_color(strategy))}",
            f"tooltip={_dot_string(node.path or '<root>')}",
        ]
        if node.claim is None:
            attrs.append('style="rounded,filled,dashed"')
        out.append(f"  {ids[node.path]} [{', '.join(attrs)}];")
    for node in plan.walk():
        for child in node.children:
            out.append(f"  {ids[node.path]} -> {ids[child.path]};")
        if node.shared_with is not None and node.shared_with in ids:
            out.append(
                f'  {ids[node.path]} -> {ids[node.shared_with]} [style=dashed, label="same module", '
                "constraint=false];"
            )
    out.append("  subgraph cluster_legend {")
    out.append('    label="strategies"; fontname="Helvetica"; fontsize=10; style=dashed;')
    for i, strategy in enumerate(used):
        text = "inherit" if strategy is None else strategy
        out.append(
            f"    legend{i} [label={_dot_string(text)}, fillcolor={_dot_string(dot_color(strategy))}];"
        )
    out.append("  }")
    out.append("}")
    log.debug("rendered a plan of %d nodes as DOT", len(plan))
    return "\n".join(out) + "\n"
