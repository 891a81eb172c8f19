"""Warnings attributed to the caller's line, not to torchstitch's internals."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from types import FrameType

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TESTS_DIR = os.path.join(_PACKAGE_DIR, "tests")


def _internal(filename: str) -> bool:
    if filename == contextlib.__file__:
        return True
    return filename.startswith(_PACKAGE_DIR) and not filename.startswith(_TESTS_DIR)


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes ``warnings.warn`` (called by our caller) point at the
    first frame outside torchstitch (``skip_file_prefixes`` needs Python 3.12)."""
    frame: FrameType | None = sys._getframe(2)  # the function that will call warnings.warn
    level = 1
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str | Warning, category: type[Warning] | None = None) -> None:
    """``warnings.warn`` at the caller's line outside torchstitch."""
    warnings.warn(message, category, stacklevel=caller_stacklevel() + 1)
