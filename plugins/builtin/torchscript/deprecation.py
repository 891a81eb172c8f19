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
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from torchstitch import TorchScriptDeprecationWarning
from torchstitch.plugins.toolkit import warn

__all__ = ["report_torchscript_deprecations"]

_MESSAGE = r"`torch\.jit\.(\w+)` is deprecated"
_PATTERN = re.compile(_MESSAGE)

_lock = threading.Lock()
_installed = {"depth": 0, "filter": None, "showwarning": None}
_local = threading.local()


def _showwarning(message, category, filename, lineno, file=None, line=None):
    counts = getattr(_local, "counts", None)
    if counts is not None and issubclass(category, DeprecationWarning):
        match = _PATTERN.match(str(message))
        if match:
            counts[f"torch.jit.{match.group(1)}"] += 1
            return
    original = _installed["showwarning"]
    (original or warnings._showwarning_orig)(message, category, filename, lineno, file, line)


def _install() -> None:
    with _lock:
        if _installed["depth"] == 0:
            warnings.filterwarnings("always", message=_MESSAGE, category=DeprecationWarning)
            _installed["filter"] = warnings.filters[0]
            _installed["showwarning"] = warnings.showwarning
            warnings.showwarning = _showwarning
        _installed["depth"] += 1


def _uninstall() -> None:
    with _lock:
        _installed["depth"] -= 1
        if _installed["depth"] == 0:
            try:
                warnings.filters.remove(_installed["filter"])
            except ValueError:
                pass  # somebody reset the filters meanwhile
            if warnings.showwarning is _showwarning:
                warnings.showwarning = _installed["showwarning"]
            _installed["filter"] = _installed["showwarning"] = None


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
