"""``script``, ``trace`` and ``trace_module``: ``compile`` with the root claimed by TorchScript.

Re-exported by ``torchstitch`` itself (``ts.script``, ``ts.trace``, ``ts.trace_module``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

# torchstitch's facade re-exports this module, so it imports the modules behind the facade
# (an import of ``torchstitch`` itself would be a cycle): it is public API, like core/api.py
from ....core.claims import Claim, ClaimKind
from ....core.engine import Engine
from ....core.inputs import as_example_args

__all__ = ["script", "trace", "trace_module"]


def _engine_and_inputs(kw: dict[str, Any]) -> tuple[Engine, dict[str, Any]]:
    if "root_strategy" in kw:
        raise TypeError("script() and trace() choose the root's strategy: root_strategy= is for compile()")
    call: dict[str, Any] = {key: kw.pop(key) for key in ("example_inputs", "inputs") if key in kw}
    return Engine(**kw), call


def script(module: torch.nn.Module, **kw: Any) -> torch.nn.Module:
    """Compile ``module`` with its root scripted (``torch.jit.script``), children as claimed.

    Takes the keyword arguments of :func:`compile` (``atol``/``rtol`` included)
    except ``root_strategy``.
    """
    engine, call = _engine_and_inputs(kw)
    root = Claim("script", ClaimKind.OVERRIDE, "torchstitch.script()", "root forced by script()")
    return engine.compile(module, root_strategy=root, **call).module


def trace(
    module: torch.nn.Module,
    example_inputs: Any = None,
    check_inputs: Sequence[Any] | None = None,
    **kw: Any,
) -> torch.nn.Module:
    """Compile ``module`` with its root traced on ``example_inputs``, children as claimed.

    Like ``torch.jit.trace``: ``example_inputs`` is the args tuple (or one tensor)
    for ``forward``, and each of ``check_inputs`` another one to check the trace
    with.  Without ``example_inputs`` the root's ``_make_tracing_inputs`` (or a
    plugin) must provide them.  Other keyword arguments are those of :func:`compile`
    (``atol``/``rtol`` included) except ``root_strategy``.
    """
    args = as_example_args(example_inputs)
    method_inputs = None if args is None else {"forward": args}
    checks = [{"forward": as_example_args(c)} for c in (check_inputs or ())]
    return _trace_root(module, method_inputs, checks, "torchstitch.trace()", kw)


def trace_module(
    module: torch.nn.Module,
    inputs: Mapping[str, tuple[Any, ...]] | None = None,
    check_inputs: Sequence[Mapping[str, tuple[Any, ...]]] | None = None,
    **kw: Any,
) -> torch.nn.Module:
    """Like ``torch.jit.trace_module``: ``inputs`` maps method names to args tuples.

    Other keyword arguments are those of :func:`compile` (per-path tracing inputs
    go in ``path_inputs=`` here, as ``inputs`` is taken).
    """
    if "path_inputs" in kw:
        kw["inputs"] = kw.pop("path_inputs")
    method_inputs = None if inputs is None else dict(inputs)
    checks = [dict(c) for c in (check_inputs or ())]
    return _trace_root(module, method_inputs, checks, "torchstitch.trace_module()", kw)


def _trace_root(
    module: torch.nn.Module,
    method_inputs: dict[str, tuple[Any, ...]] | None,
    checks: list[dict[str, Any]],  # the caller's, checked with the other tracing inputs
    claimant: str,
    kw: dict[str, Any],
) -> torch.nn.Module:
    engine, call = _engine_and_inputs(kw)
    if method_inputs is not None:
        path_inputs = dict(call.get("inputs") or {})
        path_inputs[""] = [method_inputs, *checks]
        call["inputs"] = path_inputs
        if "forward" in method_inputs and call.get("example_inputs") is None:
            # also record real inputs for traced descendants, and verify the root on them
            call["example_inputs"] = method_inputs["forward"]
    root = Claim("trace", ClaimKind.OVERRIDE, claimant, "root forced by trace()")
    return engine.compile(module, root_strategy=root, **call).module
