"""Strategy colours of a plan's pictures: ANSI for terminals, Graphviz for DOT.

:meth:`Plan.render(color=True) <torchstitch.Plan.render>` and
:meth:`Plan.to_dot() <torchstitch.Plan.to_dot>` (which draw the plan, in
``core/ir.py``) colour with this module; it knows strategy names only, not the
IR, so the IR can use it.  Colours are chosen by strategy name, so the same
strategy has the same colour in the text tree and in the graph, and a plugin's
strategy gets a stable colour of its own (from a checksum of its name, never
``hash()``, which changes between processes).
"""

from __future__ import annotations

import logging
import os
import zlib
from typing import TextIO

__all__ = ["ansi", "ansi_code", "dot_color", "stream_wants_color"]

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
