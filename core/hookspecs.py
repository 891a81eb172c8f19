"""Hook specifications: the contract between the engine and every plugin, built-in or not.

The engine calls each implementation of these hooks on its own (not through one
pluggy call), so that an exception or a wrong return value can be blamed on the
plugin that produced it (:class:`~torchstitch.PluginError`).  Consequently hook
*wrappers* (``wrapper=True`` / ``hookwrapper=True``) are not supported on
torchstitch hooks; ``tryfirst``/``trylast`` ordering is honoured as in pluggy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch

    from .claims import Claim
    from .ir import Node
    from .strategy import ArtifactFormat, CompileContext, Strategy

__all__ = ["PROJECT", "hookimpl", "hookspec"]

#: the pluggy project name, also the entry-point group plugins register under
PROJECT = "torchstitch"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------


@hookspec
def torchstitch_strategies() -> list[Strategy]:
    """Return the :class:`~torchstitch.Strategy` objects this plugin provides.

    All results are collected.  Called once per plugin manager set-up and per
    call with ``plugins=``; two plugins offering the same strategy name is a
    :class:`~torchstitch.PluginError`.
    """


# --------------------------------------------------------------------------
# claims
# --------------------------------------------------------------------------


@hookspec
def torchstitch_claim(module: torch.nn.Module, path: str) -> Claim | None:
    """Claim ``module`` (found at dotted ``path``; ``""`` is the root) for a strategy.

    Return a :class:`~torchstitch.Claim` or ``None`` to make no claim.  All
    results are collected and the engine resolves them: the strongest
    :class:`~torchstitch.ClaimKind` wins, and two different strategies offered
    with the same kind are an :class:`~torchstitch.AmbiguousClaimError`.

    Called once for every module in the tree, so keep it cheap: prefer reading
    attributes of ``type(module)`` to ``module.__getattr__``.  Must not mutate
    ``module``.
    """


# --------------------------------------------------------------------------
# tracing inputs
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def torchstitch_tracing_inputs(
    module: torch.nn.Module, node: Node, n: int, context: CompileContext
) -> list[dict[str, tuple[Any, ...]]] | None:
    """Provide example inputs for a node whose strategy needs them (``trace``, ``export``).

    Return a non-empty list of ``{method_name: args_tuple}`` dicts (the format of
    ``torch.jit.trace_module`` and e3nn's ``_make_tracing_inputs``), or ``None``
    to let the next provider try.  ``firstresult``: the first non-``None``
    answer wins.  ``n`` is how many distinct inputs would be useful (the first
    is traced, the others check the trace); returning fewer is fine.

    Built-in providers run first, in this order: the caller's ``inputs=`` for
    the path, the module's ``_make_tracing_inputs(n)``, inputs recorded from an
    eager run on ``example_inputs``.  Mark a provider ``trylast=True`` if it
    should only be asked when all of those have nothing.
    """


# --------------------------------------------------------------------------
# preparation
# --------------------------------------------------------------------------


@hookspec
def torchstitch_prepare(
    module: torch.nn.Module, node: Node, strategy: Strategy, scratch: dict[Any, Any]
) -> torch.nn.Module | None:
    """Adapt ``module`` just before ``strategy`` compiles it.

    ``module`` is the engine's private shell of the user's module: attributes
    may be replaced on it, but tensors and objects shared with the user's module
    (parameters, buffers, an ``fx.Graph``) must not be mutated in place.
    Return a replacement module or ``None`` to keep it.  Implementations are
    chained: each sees the result of the one before.  ``scratch`` is the compile
    call's memo, shared with strategies (``CompileContext.scratch``): key entries
    by your plugin's name, to reuse work across identical modules of one call.
    """


# --------------------------------------------------------------------------
# artifacts
# --------------------------------------------------------------------------


@hookspec
def torchstitch_artifact_formats() -> list[ArtifactFormat]:
    """Return the :class:`~torchstitch.ArtifactFormat` objects this plugin provides.

    All results are collected; ``torchstitch.save`` picks the one named by
    ``format=`` (or the first that accepts the compiled root) and
    ``torchstitch.load`` the one recorded in the file's metadata.  When two
    plugins offer the same name, the first registered wins.
    """


# --------------------------------------------------------------------------
# observers
# --------------------------------------------------------------------------


@hookspec
def torchstitch_node_compiled(
    node: Node, original: torch.nn.Module, compiled: torch.nn.Module, seconds: float
) -> None:
    """Called after a strategy compiled ``node`` (and it passed verification).

    ``original`` is the user's module, ``compiled`` what will be stitched in its
    place.  For progress displays, logging and reports; the return value is
    ignored and neither module may be mutated.
    """
