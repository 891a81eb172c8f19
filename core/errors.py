"""Error and warning classes: every error says where (node path), how (strategy) and who (claimant)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "StitchError",
    "UnknownStrategyError",
    "AmbiguousClaimError",
    "PlanError",
    "UnsupportedModuleError",
    "TracingInputsError",
    "NodeCompileError",
    "VerificationError",
    "PluginError",
    "ArtifactError",
    "InputSpecError",
    "TorchstitchWarning",
    "TorchScriptDeprecationWarning",
    "display_path",
    "exception_summary",
    "first_line",
]

#: how every error TorchScript's interpreter raises begins (its ``Error`` or a ``RuntimeError``)
_INTERPRETER_ERROR = "The following operation failed in the TorchScript interpreter."


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line summaries."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def exception_summary(exc: BaseException) -> str:
    """``"Type: first line of the message"`` for one-line reports of an exception.

    An error raised inside TorchScript's interpreter says only "The following
    operation failed in the TorchScript interpreter." on its first line; the
    original exception's type and message (``builtins.ValueError: ...``,
    ``RuntimeError: ...``) follow the last ``<--- HERE`` marker of its
    tracebacks, and that is what this reports.
    """
    cause = _interpreter_cause(str(exc))
    if cause is not None:
        return cause
    return f"{type(exc).__name__}: {first_line(exc)}"


def _interpreter_cause(text: str) -> str | None:
    """The first line of the original exception in a TorchScript interpreter error's text."""
    if not text.lstrip().startswith(_INTERPRETER_ERROR):
        return None
    lines = text.splitlines()
    marks = [i for i, line in enumerate(lines) if "<--- HERE" in line]
    # after the last marker come indented lines of source context, then the original exception
    for line in lines[marks[-1] + 1 if marks else 1 :]:
        if line and not line[0].isspace() and not line.startswith("Traceback of TorchScript"):
            return line.removeprefix("builtins.")
    return None


def display_path(path: str) -> str:
    """How a node path appears in messages: the root's empty path reads ``<root>``."""
    return path if path else "<root>"


class StitchError(Exception):
    """Base class of every error torchstitch raises on purpose.

    :param message: what went wrong, in one or a few sentences.
    :param path: dotted path of the node at fault (``""`` is the root), if any.
    :param strategy: the strategy that was compiling (or would have compiled) the node.
    :param claimant: who claimed the node for that strategy.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        strategy: str | None = None,
        claimant: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.strategy = strategy
        self.claimant = claimant
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(f"at {display_path(self.path)!r}")
        if self.strategy is not None:
            where.append(f"strategy {self.strategy!r}")
        if self.claimant is not None:
            where.append(f"claimed by {self.claimant}")
        if not where:
            return self.message
        return f"[{', '.join(where)}] {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep every error picklable (multiprocessing, pytest-xdist) with all its fields,
        # whatever the subclass adds: rebuild without __init__ (whose keywords differ by
        # class), then restore the formatted args and the instance's attributes.
        return _new_error, (type(self),), self._pickled_state()

    def _pickled_state(self) -> dict[str, Any]:
        state = {"args": self.args, **self.__dict__}
        if isinstance(self, OSError):  # OSError keeps its file fields outside __dict__
            state.update(errno=self.errno, strerror=self.strerror, filename=self.filename)
        return state


def _new_error(cls: type[StitchError]) -> StitchError:
    """An instance of ``cls`` whose ``__init__`` has not run, for unpickling."""
    return cls.__new__(cls)


class PlanError(StitchError, ValueError):
    """The plan is invalid: incompatible strategies in one region, a bad rule, bad options."""


class UnknownStrategyError(PlanError):
    """A claim or rule names a strategy that no registered plugin provides."""


class AmbiguousClaimError(PlanError):
    """Two claims of the same kind name different strategies for one node."""


class UnsupportedModuleError(PlanError, NotImplementedError):
    """A module claimed ``unsupported`` sits inside a compiled region.

    It is also a :class:`NotImplementedError`, which is what ``e3nn.util.jit`` raises.
    """


class TracingInputsError(StitchError):
    """A node needs tracing inputs and no provider could give any, or they were malformed."""


class NodeCompileError(StitchError):
    """A strategy failed on a node; the original exception is chained as ``__cause__``."""


class VerificationError(StitchError):
    """A compiled node's outputs differ from the eager module's on the same inputs.

    :ivar max_abs_diff: the largest absolute difference found (``nan`` when shapes
        or structure differ, or when an output holds NaN: verification cannot vouch for it).
    :ivar culprits: for a whole-model mismatch, the deepest compiled submodules
        that diverge from eager on their own inputs (:class:`torchstitch.Divergence`).
    """

    def __init__(
        self, message: str, *, max_abs_diff: float = float("nan"), culprits: Iterable[Any] = (), **kw
    ) -> None:
        self.max_abs_diff = max_abs_diff
        # Divergence (core/locate.py) is not named: errors is the bottom layer, it imports no other
        self.culprits: tuple[Any, ...] = tuple(culprits)
        super().__init__(message, **kw)


class PluginError(StitchError):
    """A plugin's hook raised, or returned a value of the wrong type.

    :ivar plugin: the registered name of the plugin at fault.
    :ivar hook: the hook's name.
    """

    def __init__(self, message: str, *, plugin: str, hook: str, **kw) -> None:
        self.plugin = plugin
        self.hook = hook
        super().__init__(f"Plugin {plugin!r} for hook {hook!r}: {message}", **kw)
        # _format() ran with the prefixed message; keep the bare one, as every error does
        self.message = message


class ArtifactError(StitchError, OSError):
    """A compiled model cannot be saved (in the asked format, or to the asked path),
    or a file is not a torchstitch artifact.

    It is also an :class:`OSError`, like the errors of writing and reading files
    it stands for (a missing directory, a file in the way, no such file); those
    set ``errno``, ``strerror`` and ``filename``.
    """

    def __str__(self) -> str:
        # OSError's own str() would show "[Errno N] strerror: filename" instead of the message
        return Exception.__str__(self)


class InputSpecError(StitchError, ValueError, TypeError):
    """A call's inputs do not fit what an exported model was built for.

    Raised by a module ``torch.export`` made (an ``ExportedModule``, compiled or
    loaded) and by a loaded AOTInductor package before they run: the message names
    the input by ``forward``'s argument name and pytree path (``data['pos']``), and
    says what the export takes (the dimension's range, its fixed size, the dtype,
    the device, the structure). A size out of range is what a ``ValueError`` stands
    for, a wrong type or structure what a ``TypeError`` does: it is both.

    :ivar input: the input at fault (``data['pos']``), or ``None`` for the structure
        of the call as a whole.
    """

    def __init__(self, message: str, *, input: str | None = None, **kw) -> None:
        self.input = input
        super().__init__(message, **kw)


class TorchstitchWarning(UserWarning):
    """Base class of torchstitch's warnings; filter on it to silence them all."""


class TorchScriptDeprecationWarning(TorchstitchWarning):
    """torch deprecated TorchScript's ``script``/``trace``; torchstitch reports it once per compile call."""
