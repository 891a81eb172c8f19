"""Strategy colours of a plan's pictures: ANSI for terminals, Graphviz for DOT.

:meth:`Plan.render(color=True) <torchstitch.Plan.render>` and
:meth:`Plan.to_dot() <torchstitch.Plan.to_dot>` (which draw the plan, in
``core/ir.py``) colour with this module; it knows no strategy and not the IR,
so the IR can use it.  A strategy declares its colour (``Strategy.color``, one of
:data:`COLORS`), the planner records the declared colours in the plan, and the
same strategy has the same colour in the text tree and in the graph.  A strategy
that declares none gets a stable colour of its own (from a checksum of its name,
never ``hash()``, which changes between processes).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import TextIO

__all__ = ["COLORS", "PALETTE", "ansi", "ansi_code", "dot_color", "stream_wants_color"]

log = logging.getLogger(__name__)

_NONE: Mapping[str, str] = MappingProxyType({})

#: the colours a strategy may declare (``Strategy.color``): name -> (ANSI SGR code, Graphviz fill)
COLORS: dict[str, tuple[str, str]] = {
    "green": ("32", "palegreen"),
    "cyan": ("36", "lightblue"),
    "red": ("31", "lightcoral"),
    "magenta": ("35", "plum"),
    "yellow": ("33", "khaki"),
    "blue": ("94", "lightskyblue"),
    "bright magenta": ("95", "thistle"),
    "bright green": ("92", "darkseagreen1"),
    "bright cyan": ("96", "paleturquoise"),
}
#: for strategies that declare no colour, chosen by a checksum of the name
PALETTE = ("magenta", "yellow", "blue", "bright magenta", "bright green", "bright cyan")
#: an inheriting node (no strategy of its own)
_INHERIT = ("2", "white")  # dim

_RESET = "\x1b[0m"


def _pick(strategy: str | None, colors: Mapping[str, str]) -> tuple[str, str]:
    if strategy is None:
        return _INHERIT
    name = colors.get(strategy) or PALETTE[zlib.crc32(strategy.encode()) % len(PALETTE)]
    return COLORS[name]


def ansi_code(strategy: str | None, colors: Mapping[str, str] = _NONE) -> str:
    """The ANSI SGR parameter for ``strategy`` (``None``: an inheriting node).

    :param colors: the colour name each strategy declared, by strategy name (a plan's
        :attr:`~torchstitch.Plan.colors`); a strategy without one gets a palette colour.
    """
    return _pick(strategy, colors)[0]


def ansi(text: str, strategy: str | None, colors: Mapping[str, str] = _NONE) -> str:
    """``text`` wrapped in the ANSI colour of ``strategy`` (see :func:`ansi_code`)."""
    return f"\x1b[{ansi_code(strategy, colors)}m{text}{_RESET}"


def dot_color(strategy: str | None, colors: Mapping[str, str] = _NONE) -> str:
    """The Graphviz fill colour of ``strategy`` (see :func:`ansi_code`)."""
    return _pick(strategy, colors)[1]


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
