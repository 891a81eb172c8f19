"""Verification: compare a compiled module's outputs with eager outputs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

__all__ = ["Tolerance", "Mismatch", "compare", "tolerance_validator"]


def tolerance_validator(owner: str = "") -> Callable[[Any, attrs.Attribute, Any], None]:
    """An attrs validator of ``atol``/``rtol``: a number >= 0, or ``None`` (pick by dtype).

    :param owner: what the message puts before the field's name (``"Strategy."``).
    """

    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{owner}{attribute.name} must be a number >= 0 or None, got {value!r}")

    return check


@attrs.frozen
class Tolerance:
    """``|actual - expected| <= atol + rtol * |expected|``; ``None`` picks by dtype."""

    #: the caller's ``atol=``
    atol: float | None = attrs.field(default=None, validator=tolerance_validator())
    #: the caller's ``rtol=``
    rtol: float | None = attrs.field(default=None, validator=tolerance_validator())

    def for_dtype(self, dtype: torch.dtype) -> tuple[float, float]:
        if dtype in (torch.float16, torch.bfloat16):
            default = (1e-2, 1e-2)
        elif dtype == torch.float64:
            default = (1e-7, 1e-7)
        else:
            default = (1e-5, 1e-4)
        return (
            default[0] if self.atol is None else self.atol,
            default[1] if self.rtol is None else self.rtol,
        )


@attrs.frozen
class Mismatch:
    """Why two outputs differ: where in the output structure, and by how much."""

    where: str
    detail: str
    max_abs_diff: float


@attrs.define
class _Walk:
    """What :func:`compare` gathers while it walks two outputs side by side."""

    keeps_fields: tuple[str, ...]
    largest: float = 0.0
    mismatch: Mismatch | None = None
    #: where eager gave NaN, matched by NaN in the compiled output (the first place)
    nan_at: str | None = None
    #: whether any floating value that is not NaN was compared
    compared_numbers: bool = False


def compare(
    expected: Any, actual: Any, tolerance: Tolerance, keeps_fields: Sequence[str] = ()
) -> tuple[float, Mismatch | None]:
    """Largest absolute difference over all tensors, and the first mismatch (or ``None``).

    :param keeps_fields: strategies to suggest when a NamedTuple came back as a plain
        tuple (strategies that compile the source rather than record a run keep them).

    Containers must be of the same kind (a NamedTuple with the same fields, a
    tuple, a list, a dict with the same keys) and the same length; tensors of the
    same shape and dtype, equal within ``tolerance``.

    The two outputs are walked side by side rather than flattened as pytrees: their
    containers differ by design (TorchScript rebuilds NamedTuples and dicts, see
    :func:`_container_kind`), and a mismatch of structure must say where it is.
    """
    state = _Walk(tuple(keeps_fields))
    _compare(expected, actual, tolerance, "output", state)
    if state.nan_at is not None and not state.compared_numbers:
        # NaN for NaN is equal next to numbers that agree (a stress of a cluster without a
        # cell), but an output with nothing but NaN verifies nothing
        _fail(state, state.nan_at, "NaN in the eager output, and no number to compare anywhere")
    return state.largest, state.mismatch


def _fail(state: _Walk, where: str, detail: str, diff: float = math.nan) -> None:
    if state.mismatch is None:
        state.mismatch = Mismatch(where, detail, diff)


def _compare(expected: Any, actual: Any, tol: Tolerance, where: str, state: _Walk) -> None:
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            return _fail(state, where, f"expected a tensor, got {type(actual).__name__}")
        if expected.shape != actual.shape or expected.dtype != actual.dtype:
            return _fail(
                state,
                where,
                f"expected {expected.dtype} {tuple(expected.shape)}, "
                f"got {actual.dtype} {tuple(actual.shape)}",
            )
        if not (expected.is_floating_point() or expected.is_complex()):
            if not torch.equal(expected, actual):
                worst = (expected.long() - actual.long()).abs().max().item() if expected.numel() else 0
                state.largest = max(state.largest, float(worst))
                _fail(state, where, "integer values differ", float(worst))
            return None
        e, a = expected.detach(), actual.detach().to(expected.device)
        nan_e, nan_a = torch.isnan(e), torch.isnan(a)
        if not torch.equal(nan_e, nan_a):
            return _fail(
                state,
                where,
                "NaN in the eager output where the compiled one has a number"
                if (nan_e & ~nan_a).any()
                else "NaN in the compiled output where eager has a number",
            )
        if nan_e.any():  # NaN where eager has NaN (a stress of a cluster without a cell): equal
            state.nan_at = state.nan_at or where
            e, a = e[~nan_e], a[~nan_e]
        if e.numel() == 0:
            return None
        state.compared_numbers = True
        diff = (e - a).abs()
        largest = float(diff.max())
        state.largest = max(state.largest, largest)
        atol, rtol = tol.for_dtype(e.dtype)
        if bool((diff > atol + rtol * e.abs()).any()):
            _fail(state, where, f"values differ by up to {largest:.3g}", largest)
        return None
    kind = _container_kind(expected)
    if kind != _container_kind(actual):
        lost = kind is not None and kind[0] == "namedtuple" and isinstance(actual, tuple)
        keeps = " or ".join(map(repr, state.keeps_fields)) or "with a strategy that compiles its source"
        hint = (
            f" (a trace returns NamedTuples as plain tuples: claim the module {keeps}, "
            "which keeps the fields, or return a plain tuple)"
            if lost
            else ""
        )
        return _fail(state, where, f"expected {_shape(expected)}, got {_shape(actual)}{hint}")
    if isinstance(expected, (tuple, list)):
        if len(actual) != len(expected):
            return _fail(state, where, f"expected {_shape(expected)}, got {_shape(actual)}")
        for i, (x, y) in enumerate(zip(expected, actual)):
            _compare(x, y, tol, f"{where}[{i}]", state)
        return None
    if isinstance(expected, dict):
        if set(actual) != set(expected):
            return _fail(state, where, f"expected keys {sorted(map(str, expected))}, got {_shape(actual)}")
        for key in expected:
            _compare(expected[key], actual[key], tol, f"{where}[{key!r}]", state)
        return None
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        largest = abs(expected - actual)
        state.largest = max(state.largest, largest)
        atol, rtol = tol.for_dtype(torch.float32)
        if not largest <= atol + rtol * abs(expected):
            _fail(state, where, f"{actual!r} != {expected!r}", largest)
        return None
    if isinstance(actual, torch.Tensor):
        return _fail(state, where, f"expected {_shape(expected)}, got a tensor")
    try:
        equal = bool(expected == actual)
    except Exception:  # objects that cannot say: verification cannot vouch for them
        equal = False
    if not equal:
        _fail(state, where, f"{actual!r} != {expected!r}")
    return None


def _container_kind(value: Any) -> tuple[str, ...] | None:
    """What a caller of the output can rely on: a NamedTuple's fields, a tuple, a list, a dict.

    Verification compares containers by kind, not by class, because TorchScript
    rebuilds them: a scripted NamedTuple comes back as a namedtuple class of
    TorchScript's making with the same fields, a dict subclass as a plain dict
    (and recorded eager outputs keep no dict subclass either).  What must match
    is what a parent reads: ``out.field`` needs the same fields (a trace returns
    a NamedTuple as a plain tuple, which verification refuses), ``out.append``
    a list, ``out[0]`` a sequence and ``out["key"]`` a dict.
    """
    if isinstance(value, tuple):
        fields = getattr(value, "_fields", None)
        return ("namedtuple", *fields) if isinstance(fields, tuple) else ("tuple",)
    if isinstance(value, list):
        return ("list",)
    if isinstance(value, dict):
        return ("dict",)
    return None


def _shape(value: Any) -> str:
    fields = getattr(value, "_fields", None)
    if isinstance(value, tuple) and isinstance(fields, tuple):
        return f"a NamedTuple {type(value).__name__}({', '.join(fields)})"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, dict):
        return f"keys {sorted(map(str, value))}"
    return type(value).__name__
