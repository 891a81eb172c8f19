"""Why ``torch.export.export`` failed: a stable reason code, torch's first line, the user's
source line and the cure.

:func:`diagnose` reads an exception raised by ``torch.export.export`` (plain, strict, or
on a ``make_fx`` graph).  The codes are the keys of :data:`REASONS` and are documented in
``docs/export-reasons.md``; they were chosen from what torch 2.13 raises on small
reproducers (a branch on ``x.sum()``, ``torch.autograd.grad`` in ``forward``, a scripted
child, a dynamic dim the code specialises, ...), not from torch's exception classes alone:
one class (``RuntimeError``, Dynamo's ``Unsupported``) covers several causes with
different cures.
"""

from __future__ import annotations

import logging
import re
import sysconfig
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType

import attrs
import torch

from torchstitch.plugins.toolkit import first_line

__all__ = ["REASONS", "Diagnosis", "Reason", "SourceLine", "diagnose"]

log = logging.getLogger(__name__)


@attrs.frozen
class Reason:
    """One reason code: what it means and its cure (the table of ``docs/export-reasons.md``)."""

    #: the stable code, short snake_case
    code: str
    #: what made the export fail, in a sentence
    meaning: str
    #: what to do about it (the diagnosis' hint)
    cure: str


_REASONS = (
    Reason(
        "data_dependent_branch",
        "the code decides something from tensor values (an `if` on `x.sum() > 0`, a slice "
        "bound from a tensor), which one graph cannot hold",
        "The code branches on tensor values: rewrite the branch with torch.cond, or claim "
        "the module 'script' (TorchScript target) or 'unsupported' (kept in Python, outside "
        "every export region)",
    ),
    Reason(
        "data_dependent_value",
        "the code turns a tensor value into a Python number (`int(x.max())`, `x.item()` used as a size)",
        "The code turns a tensor value into a Python int (e.g. a size from .item()): keep it a "
        "tensor, bound it with torch._check(...) before use, or claim the module 'script' or "
        "'unsupported' (kept in Python, outside every export region)",
    ),
    Reason(
        "autograd_in_forward",
        "`forward` calls `torch.autograd.grad` (forces from an energy); plain export leaves "
        "a fake tensor behind (strict export refuses the call)",
        "This usually means torch.autograd.grad (e.g. forces) inside forward: the export "
        "strategy traces it with make_fx first, which it does by default (do not pass "
        "strategy_options={'export': {'make_fx': False}})",
    ),
    Reason(
        "constraint_violation",
        "a dimension declared dynamic was specialised by the code, or by an example of size 0 or 1",
        "A dimension declared dynamic was specialised by the code (e.g. a branch on its size); "
        "make the code size-independent, or drop it from the export options 'dims' / "
        "'dynamic_shapes'",
    ),
    Reason(
        "torchscript_module",
        "the region holds a TorchScript module (`torch.jit.script`/`trace` output), which "
        "export cannot trace",
        "Export the eager module instead of its TorchScript form (do not torch.jit.script it "
        "before compiling); otherwise the export strategy traces through it with make_fx, "
        "which it does by default (do not pass strategy_options={'export': {'make_fx': False}})",
    ),
    Reason(
        "unsupported_operator",
        "an operator has no fake (meta) implementation, so export cannot trace it",
        "Register a fake implementation for the operator (torch.library.register_fake), or "
        "claim the module 'unsupported' to keep it in Python outside every export region",
    ),
    Reason(
        "non_torch_code",
        "a tensor reaches code outside torch (`.numpy()`, `data_ptr()`, a C extension), "
        "which sees no real data while tracing",
        "Wrap the non-torch code in a custom operator (torch.library.custom_op), rewrite it "
        "with torch operations, or claim the module 'unsupported'",
    ),
    Reason(
        "dynamo_unsupported",
        "strict export (`strict=True`, TorchDynamo) cannot trace a Python construct",
        "Export non-strict (the default: drop strict=True from the export options), or "
        "rewrite the construct Dynamo names",
    ),
    Reason(
        "input_structure",
        "an argument is not a tensor, number, string or pytree container of them",
        "Pass tensors, numbers or containers of them (register a custom class with "
        "torch.export.register_dataclass or torch.utils._pytree.register_pytree_node)",
    ),
    Reason(
        "output_structure",
        "`forward` returns something that is not a pytree of tensors (a set, a custom object)",
        "Return tensors in tuples, lists or dicts (register a custom class with "
        "torch.utils._pytree.register_pytree_node)",
    ),
    Reason(
        "dynamic_shapes_spec",
        "the dynamic-shapes specification does not fit the inputs (names, counts, a dim on a non-tensor)",
        "Make 'dims' / 'dynamic_shapes' name the node's forward arguments and tensor axes",
    ),
    Reason(
        "other",
        "anything else: read torch's message",
        "Read torch's message above; torch.export.draft_export lists every problem at once",
    ),
)

#: code -> :class:`Reason`, every code :func:`diagnose` gives
REASONS: dict[str, Reason] = {reason.code: reason for reason in _REASONS}


@attrs.frozen
class SourceLine:
    """A line of the user's code: where the failing operation was called."""

    #: the file, as the traceback names it
    filename: str
    #: the line number, from 1
    lineno: int
    #: the line's code, stripped (``""`` where the file cannot be read)
    code: str = ""

    def short(self) -> str:
        """``file.py:LINE code``, the file without its folders (for tables)."""
        where = f"{Path(self.filename).name}:{self.lineno}"
        return f"{where} {self.code}" if self.code else where

    def __str__(self) -> str:
        where = f"{self.filename}:{self.lineno}"
        return f"{where}: {self.code}" if self.code else where


@attrs.frozen
class Diagnosis:
    """Why one export failed."""

    #: the reason code, a key of :data:`REASONS`
    code: str = attrs.field(validator=attrs.validators.in_(REASONS))
    #: torch's exception type (``GuardOnDataDependentSymNode``)
    error_type: str
    #: the first line of torch's message
    first_line: str
    #: the cure, with torch's suggested fixes where it gave some
    hint: str
    #: the user's line that made it fail, if found
    source: SourceLine | None = None

    @property
    def known(self) -> bool:
        """Whether the cause is recognised (``code`` is not ``"other"``)."""
        return self.code != "other"

    def message(self) -> str:
        """One paragraph for an error message: torch's error, where it came from, the cure."""
        text = f"torch.export failed: {self.error_type}: {self.first_line.rstrip('.')}"
        if self.source is not None:
            text += f" (at {self.source})"
        return f"{text}. {self.hint} [reason: {self.code}]"


def diagnose(exc: BaseException) -> Diagnosis:
    """The reason code, source line and cure of an exception ``torch.export.export`` raised.

    :param exc: what ``torch.export.export`` (or ``make_fx`` before it) raised.
    """
    text = str(exc)
    code = _classify(exc, text)
    hint = REASONS[code].cure
    if code == "constraint_violation":
        hint = _constraint_hint(text, hint)
    return Diagnosis(
        code=code,
        error_type=type(exc).__name__,
        first_line=first_line(exc),
        hint=hint,
        source=source_line(exc),
    )


# --------------------------------------------------------------------------
# reason codes
# --------------------------------------------------------------------------

#: texts of torch's messages, by code, checked in this order (the first match wins)
_TEXTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "torchscript_module",
        ("Exporting a ScriptModule is not supported", "ScriptModule has not been initialized"),
    ),
    ("data_dependent_value", ("Could not extract specialized integer from data-dependent",)),
    ("data_dependent_branch", ("data-dependent",)),
    ("constraint_violation", ("Constraints violated",)),
    ("autograd_in_forward", ("fake tensor in the exported program constant", "torch.autograd.grad")),
    (
        "non_torch_code",
        (
            "is not supported for tensor subclasses",
            "Cannot access data pointer",
            "Cannot access storage",
            "Attempted to call function marked as skipped",
        ),
    ),
    ("input_structure", ("Unsupported input type", "Expecting `args` to be a tuple")),
    ("output_structure", ("in output, which is not a known type",)),
    ("dynamic_shapes_spec", ("dynamic_shapes", "dynamic_shape ")),
)

#: torch's exception class names that say the reason alone
_TYPES = {
    "GuardOnDataDependentSymNode": "data_dependent_branch",
    "UnsupportedOperatorException": "unsupported_operator",
    "Unsupported": "dynamo_unsupported",
}


def _classify(exc: BaseException, text: str) -> str:
    if _script_module_in_traceback(exc):
        return "torchscript_module"
    for code, needles in _TEXTS:
        if any(needle in text for needle in needles):
            return code
    return _TYPES.get(type(exc).__name__, "other")


def _script_module_in_traceback(exc: BaseException) -> bool:
    """Whether the failure happened while calling a TorchScript module (a scripted child
    makes non-strict export fail with a bare ``TypeError`` about its ``forward``)."""
    for frame, _ in _frames(exc):
        owner = frame.f_locals.get("self")
        if isinstance(owner, torch.jit.ScriptModule):
            return True
    return False


def _constraint_hint(text: str, cure: str) -> str:
    """The cure of a "Constraints violated": say when an example of size 0 or 1 is the cause."""
    constant = re.search(r"specialized it to be a constant \((\d+)\)", text)
    if (constant and constant.group(1) in ("0", "1")) or "0/1 specialized" in text:
        size = constant.group(1) if constant else "0 or 1"
        cure = (
            f"An example input has size {size} on a dimension declared dynamic, and "
            "torch specialises sizes 0 and 1: give example inputs of size 2 or more on that axis"
        )
    return cure + _suggested_fixes(text)


def _suggested_fixes(text: str) -> str:
    """torch's "Suggested fixes:" lines (for a specialised dynamic dim), if it gave any."""
    _, found, rest = text.partition("Suggested fixes:")
    if not found:
        return ""
    lines = [line.strip() for line in rest.strip().split("\n\n")[0].splitlines()[:3] if line.strip()]
    return " (torch suggests: " + " ".join(lines) + ")" if lines else ""


# --------------------------------------------------------------------------
# the user's source line
# --------------------------------------------------------------------------

#: non-strict export's pointer to the user's frame (torch's ``_blame_user_code``)
_RAISED_BY = re.compile(
    r'The following call raised this error:\n\s*File "([^"]+)", line (\d+)[^\n]*\n([^\n]*)'
)
#: strict export's (Dynamo's) user stack, innermost frame last
_USER_CODE = re.compile(r'File "([^"]+)", line (\d+), in [^\n]*\n([^\n]*)')


def source_line(exc: BaseException) -> SourceLine | None:
    """The user's line that made the export fail: where torch says, else the deepest frame
    of the traceback (the exception's chain included) that is neither torch's, torchstitch's
    nor the standard library's, below the call into torch."""
    text = str(exc)
    found = _RAISED_BY.search(text)
    if found is not None:
        return _line(found.group(1), int(found.group(2)), found.group(3))
    _, marker, user_code = text.partition("from user code:")
    if marker:
        frames = [m for m in _USER_CODE.finditer(user_code) if not _internal(m.group(1))]
        if frames:
            return _line(frames[-1].group(1), int(frames[-1].group(2)), frames[-1].group(3))
    return _deepest_user_frame(exc)


def _line(filename: str, lineno: int, code: str) -> SourceLine:
    return SourceLine(filename, lineno, code.strip())


def _deepest_user_frame(exc: BaseException) -> SourceLine | None:
    deepest = None
    entered_torch = False
    for frame, lineno in _frames(exc):
        filename = frame.f_code.co_filename
        if _is_torch(filename):
            entered_torch = True
        elif entered_torch and not _internal(filename):
            summary = traceback.FrameSummary(filename, lineno, frame.f_code.co_name)
            deepest = _line(filename, lineno, summary.line or "")
    return deepest


def _frames(exc: BaseException) -> Iterator[tuple[FrameType, int]]:
    """``(frame, line)`` of the traceback of ``exc`` and of the exceptions it chains, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb: TracebackType | None = current.__traceback__
        while tb is not None:
            yield tb.tb_frame, tb.tb_lineno
            tb = tb.tb_next
        current = current.__cause__ or current.__context__


_TORCH_DIR = Path(torch.__file__).resolve().parent
#: the torchstitch package (the repository root); its tests, benchmarks and examples are user code
_PACKAGE_DIR = Path(__file__).resolve().parents[2]
_NOT_PACKAGE = tuple(_PACKAGE_DIR / name for name in ("tests", "benchmarks", "examples"))
_STDLIB_DIRS = tuple({Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")})
#: where installed packages live, below the standard library's folder on some systems
_THIRD_PARTY = frozenset({"site-packages", "dist-packages"})


def _is_torch(filename: str) -> bool:
    return _under(filename, (_TORCH_DIR,))


def _internal(filename: str) -> bool:
    """Whether ``filename`` is torch's, torchstitch's own or the standard library's code."""
    if filename.startswith("<"):
        # generated code: torch's wrappers (<string>) are internal, fx graphs' code
        # (<eval_with_key>.3: a make_fx graph, e3nn's generated modules) is the user's
        return not filename.startswith("<eval_with_key>")
    if _under(filename, (_TORCH_DIR,)):
        return True
    if _under(filename, _STDLIB_DIRS) and not _THIRD_PARTY & set(Path(filename).parts):
        return True
    return _under(filename, (_PACKAGE_DIR,)) and not _under(filename, _NOT_PACKAGE)


def _under(filename: str, folders: tuple[Path, ...]) -> bool:
    if filename.startswith("<"):
        return False
    try:
        resolved = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return any(resolved.is_relative_to(folder) for folder in folders)
