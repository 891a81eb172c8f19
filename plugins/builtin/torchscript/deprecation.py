"""Report torch's TorchScript deprecation warnings once per compile call, not once per node.

torch 2.13 emits a ``DeprecationWarning`` from every ``torch.jit.script`` /
``trace`` / ``trace_module`` call (and torch's default filters hide most of
them).  While a compile runs, a filter matching exactly that message makes them
reach a ``showwarning`` that counts them for the compiling thread; afterwards
one :class:`~torchstitch.TorchScriptDeprecationWarning` summarises them.  Other
warnings, other threads' warnings and anything outside torchstitch's calls pass
through untouched.

The ``warnings`` module is process-global, so installing and removing the
filter is reference-counted under a lock: concurrent compiles in several
threads share one installation (``warnings.catch_warnings`` is not thread-safe).
"""

from __future__ import annotations

import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from torchstitch import TorchScriptDeprecationWarning
from torchstitch.plugins.toolkit import warn

__all__ = ["report_torchscript_deprecations"]

_MESSAGE = r"`torch\.jit\.(\w+)` is deprecated"
_PATTERN = re.compile(_MESSAGE)


class _Installation:
    """What :func:`_install` put in place, shared by concurrent compiles (guarded by ``_lock``)."""

    def __init__(self) -> None:
        #: how many compiles are counting
        self.depth = 0
        #: our entry in ``warnings.filters``
        self.filter: tuple[Any, ...] | None = None
        #: the ``warnings.showwarning`` that ours replaced
        self.showwarning: Callable[..., Any] | None = None


_lock = threading.Lock()
_installed = _Installation()
_local = threading.local()


def _showwarning(message, category, filename, lineno, file=None, line=None):
    counts = getattr(_local, "counts", None)
    if counts is not None and issubclass(category, DeprecationWarning):
        match = _PATTERN.match(str(message))
        if match:
            counts[f"torch.jit.{match.group(1)}"] += 1
            return
    original = _installed.showwarning
    if original is None:  # uninstalled meanwhile: Python's own
        original = warnings._showwarning_orig  # type: ignore[attr-defined]  # private, not in typeshed
    original(message, category, filename, lineno, file, line)


def _install() -> None:
    with _lock:
        if _installed.depth == 0:
            warnings.filterwarnings("always", message=_MESSAGE, category=DeprecationWarning)
            _installed.filter = warnings.filters[0]
            _installed.showwarning = warnings.showwarning
            warnings.showwarning = _showwarning
        _installed.depth += 1


def _uninstall() -> None:
    with _lock:
        _installed.depth -= 1
        if _installed.depth == 0:
            try:
                # a list at runtime; typeshed declares a read-only Sequence
                warnings.filters.remove(_installed.filter)  # type: ignore[attr-defined]
            except ValueError:
                pass  # somebody reset the filters meanwhile
            if warnings.showwarning is _showwarning:
                assert _installed.showwarning is not None  # set by _install
                warnings.showwarning = _installed.showwarning
            _installed.filter = _installed.showwarning = None


@contextmanager
def report_torchscript_deprecations() -> Iterator[None]:
    """Count TorchScript deprecation warnings in the block; warn once at its end."""
    if getattr(_local, "counts", None) is not None:
        yield  # nested compile (e.g. a strategy compiling through torchstitch): outer reports
        return
    counts: Counter[str] = Counter()
    _local.counts = counts
    _install()
    try:
        yield
    finally:
        _uninstall()
        _local.counts = None
    # only after success: under an "error" filter the warning must not replace the
    # exception (a NodeCompileError, a KeyboardInterrupt) that is on its way out
    if counts:
        calls = ", ".join(f"{name} ({n}x)" for name, n in sorted(counts.items()))
        warn(
            TorchScriptDeprecationWarning(
                f"torch {torch.__version__} deprecates TorchScript; this call used "
                f"{calls}. TorchScript artifacts still load in libtorch hosts; torch.export "
                "based strategies are the way forward."
            )
        )
