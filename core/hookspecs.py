"""Hook specifications: the contract between the engine and every plugin, built-in or not.

pluggy calls these hooks, so ``tryfirst``/``trylast`` and hook wrappers
(``wrapper=True``) work as pluggy documents them; an implementation that raises
becomes a :class:`~torchstitch.PluginError` naming its plugin, the hook and the
node path.  Hooks whose answers torchstitch attributes to a plugin (the provider
of a strategy, of tracing inputs, a preparer) are asked one plugin at a time,
each ask a pluggy call of that plugin's implementation alone (wrappers wrap each
ask); their docstrings say so.  ``torchstitch_claim`` is called by torchstitch
itself for speed unless a wrapper or ``TORCHSTITCH_DEBUG`` needs pluggy's call
(see ``PluginSet.claims``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch

    from .claims import Claim
    from .ir import Node, Plan
    from .options import CompileOptions
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
    :class:`~torchstitch.PluginError`.  Asked one plugin at a time: the plugin
    that returned a strategy is its provider (``torchstitch strategies``, errors).
    """
    raise NotImplementedError  # a specification: pluggy calls the plugins' implementations


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
    TorchScript's ``trace_module`` and e3nn's ``_make_tracing_inputs``), or ``None``
    to let the next provider try.  ``firstresult``: the first non-``None``
    answer wins.  ``n`` is how many distinct inputs would be useful (the first
    is traced, the others check the trace); returning fewer is fine.

    Asked one plugin at a time, in pluggy's call order, until one answers: the
    plugin that answered is the inputs' source (``CompileContext.inputs_source``,
    ``Outcome.inputs_source``).  Built-in providers run first, in this order: the caller's ``inputs=`` for
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
    chained: each plugin is asked on its own, with the result of the one before.  ``scratch`` is the compile
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
    plugins offer the same name, the first registered wins.  A format whose
    ``takes_cache_dir`` is true gets, unless the caller names one, the
    ``cache_dir`` option the model was compiled with.
    """
    raise NotImplementedError  # a specification: pluggy calls the plugins' implementations


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


# --------------------------------------------------------------------------
# around the engine's work (default implementations in core/default_hooks.py)
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def torchstitch_compile_run(plan: Plan, execute: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
    """Run one compile call of ``plan`` (planned and checked) and return the compiled model.

    ``firstresult``: the first non-``None`` answer is the compiled model; the default
    implementation (``trylast``) returns ``execute()``, which compiles every node,
    finalizes and verifies the root, so return ``None`` to leave it to it.  Wrap it with
    ``@hookimpl(wrapper=True)`` for work around a whole compile call, as the
    TorchScript plugin reports torch's deprecation warnings once per call.
    Exceptions of ``execute()`` propagate unchanged.
    """


@hookspec(firstresult=True)
def torchstitch_verification_run(function: Callable[..., Any], args: tuple[Any, ...], path: str) -> Any:
    """Run a compiled module for verification and return its outputs.

    ``function`` is the compiled module, or one of its methods, of the node at
    ``path`` (``""``: the root); ``args`` its positional arguments.  ``firstresult``:
    the first non-``None`` answer is taken as the outputs; the default
    implementation (``trylast``) calls ``function``, with copies of its inputs.
    Wrap it with ``@hookimpl(wrapper=True)`` to change how a family's modules run
    when they are checked, as the TorchScript plugin turns TorchScript's graph
    optimizer off.  Exceptions of ``function`` propagate unchanged.
    """


# --------------------------------------------------------------------------
# the plan and the compiled root
# --------------------------------------------------------------------------


@hookspec
def torchstitch_check_plan(
    plan: Plan, module: torch.nn.Module, options: CompileOptions, strategies: Mapping[str, Strategy]
) -> None:
    """Refuse a plan before anything compiles: raise a :class:`~torchstitch.PlanError`.

    Called by ``compile`` and ``plan`` with the caller's ``module`` (read only),
    the call's options and every strategy of the call, by name.  For checks a
    family's finalize step needs (the TorchScript plugin refuses ``freeze=True``
    without a TorchScript root in eval mode).  The return value is ignored.
    """


@hookspec
def torchstitch_finalize(
    module: torch.nn.Module, plan: Plan, options: CompileOptions
) -> torch.nn.Module | None:
    """Turn the compiled, stitched root into the final artifact, before it is verified.

    Return a replacement module or ``None`` to keep ``module``.  Implementations
    are chained like ``torchstitch_prepare``: each plugin is asked on its own,
    with the result of the one before.  The TorchScript plugin freezes the root
    here under ``freeze=True``.
    """


@hookspec(firstresult=True)
def torchstitch_runs_alone(module: torch.nn.Module) -> bool | None:
    """Whether ``module``, a submodule of a compiled model, can be called on its own.

    :func:`~torchstitch.locate` (and the engine's search for the culprit of a root
    that differs from eager) runs compiled submodules alone on their recorded
    inputs.  Return ``False`` for one that is part of a larger artifact and
    refuses to run alone (the TorchScript plugin: a submodule of a trace), or
    ``None`` to let others decide.  ``firstresult``: the first non-``None`` answer
    wins; when nobody answers it runs.
    """
