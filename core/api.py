"""The functional API: ``compile`` and ``plan`` (``script``/``trace`` are the TorchScript plugin's)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from .claims import Claim, Rule
from .engine import Engine
from .ir import Plan
from .options import option_arguments

__all__ = ["compile", "plan"]


def plan(
    module: torch.nn.Module,
    *,
    example_inputs: Any = None,
    inputs: Mapping[str, Any] | None = None,
    rules: Sequence[Rule] = (),
    recurse: bool = True,
    plugins: Iterable[object | str] | None = None,
    target: str | None = None,
    root_strategy: str | Claim | None = None,
    freeze: bool = False,
) -> Plan:
    """Resolve every node's claim and validate the plan; compile nothing.

    Takes the arguments of :func:`compile` that shape the plan, and gives the plan
    :meth:`Engine.compile` follows with them.  ``example_inputs`` and ``inputs`` are
    checked (arity is not: that needs a run) so a later :func:`compile` with the same
    arguments fails no earlier than here.
    """
    engine = Engine(**option_arguments(locals()))
    return engine.plan(module, example_inputs=example_inputs, inputs=inputs, root_strategy=root_strategy)


def compile(
    module: torch.nn.Module,
    *,
    example_inputs: Any = None,
    inputs: Mapping[str, Any] | None = None,
    rules: Sequence[Rule] = (),
    in_place: bool = False,
    recurse: bool = True,
    n_trace_checks: int = 1,
    script_options: Mapping[str, Any] | None = None,
    trace_options: Mapping[str, Any] | None = None,
    strategy_options: Mapping[str, Mapping[str, Any]] | None = None,
    verify: bool = True,
    on_error: str = "raise",
    atol: float | None = None,
    rtol: float | None = None,
    plugins: Iterable[object | str] | None = None,
    freeze: bool = False,
    target: str | None = None,
    progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    root_strategy: str | Claim | None = None,
) -> torch.nn.Module:
    """Compile ``module`` piece by piece and return the stitched model.

    Each submodule is compiled by the strategy that claims it (``@compile_mode``,
    another library's attribute, a plugin's rule, or ``rules=``); unclaimed
    modules are compiled as part of their nearest compiled ancestor, or stay in
    Python: a model in which nothing is claimed is not compiled (a
    :class:`TorchstitchWarning` says so; claim its root with ``root_strategy=``,
    or use :func:`script` or :func:`trace`).  The caller's model is never changed,
    unless ``in_place=True``, and then only once everything compiled.  For timings, verification figures and
    the annotated plan use :class:`Engine` and its :class:`CompileResult`.

    :param example_inputs: arguments for the root's ``forward`` (a tuple, or one tensor):
        run eagerly to record real inputs for traced submodules, and used to verify the
        result.  A list of such tuples is several input sets (``[(pos6, z6), (pos9, z9)]``):
        each is recorded and verified, and ``target="export"`` makes every size that
        differs between them dynamic.
    :param inputs: tracing inputs by dotted path; they beat every other source.
    :param rules: :class:`Rule` overrides, first match wins.
    :param in_place: put compiled children into the caller's modules on success.
    :param recurse: compile claimed descendants on their own (else only the root).
    :param n_trace_checks: distinct tracing inputs to check each trace with.
    :param script_options: keyword arguments for the ``script`` strategy's compiler.
    :param trace_options: keyword arguments for the ``trace`` strategy's compiler.
    :param strategy_options: options for any strategy, by strategy name
        (``{"export": {"dims": ...}}``); ``script_options``/``trace_options`` win.
    :param verify: compare traced nodes and the whole model with eager.
    :param on_error: ``"raise"``, or ``"fallback"`` along each strategy's fallbacks.
    :param atol: verification's absolute tolerance (``|Δ| <= atol + rtol * |eager|``);
        ``None``: the strategy's own (:attr:`Strategy.atol`), else by dtype.
    :param rtol: verification's relative tolerance, likewise.
    :param plugins: plugin objects to add and ``"no:NAME"`` strings to block, for this call.
    :param freeze: freeze the TorchScript root for inference (needs
        ``model.eval()``; the frozen model holds its own copy of the weights).
    :param target: compile every claimed node for this artifact family (e.g.
        ``"export"``, from the export plugin) instead of the family claimed.
    :param progress: show which node is compiling on stderr (only on a terminal).
    :param cache_dir: a folder caching compiled nodes by architecture (a later compile of
        the same architecture, other weights included, loads them); ``None``:
        ``$TORCHSTITCH_CACHE_DIR``, else no cache.  See docs/cache.md.
    :param root_strategy: force the root's strategy (a name such as ``"script"``).
    """
    engine = Engine(**option_arguments(locals()))
    result = engine.compile(module, example_inputs=example_inputs, inputs=inputs, root_strategy=root_strategy)
    return result.module
