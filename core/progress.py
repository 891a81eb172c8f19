"""A one-line progress display over the nodes being compiled (terminals only)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .errors import display_path

__all__ = ["Progress"]


class Progress:
    """``[ 12/84] 1.3 s  layers.3.tp (script)`` on one line of ``stream``, rewritten in place.

    Does nothing unless ``stream`` is a terminal: logs and CI output stay clean.
    """

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = total > 0 and bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        self._width = 0

    def node(self, path: str, strategy: str) -> None:
        """A node starts compiling."""
        self.done += 1
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            digits = len(str(self.total))
            self._write(
                f"[{self.done:>{digits}}/{self.total}] {elapsed:5.1f} s  {display_path(path)} ({strategy})"
            )

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()

    def _write(self, text: str) -> None:
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + padding)
        self.stream.flush()
