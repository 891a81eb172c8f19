"""The types plugins construct: strategies, artifact formats, and the per-call context
handed to strategies and tracing-input providers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import torch

from .cache import CacheCodec
from .errors import PlanError, StitchError
from .render import COLORS
from .verify import tolerance_validator

if TYPE_CHECKING:
    from .ir import Node

__all__ = ["ArtifactFormat", "Strategy", "CompileContext", "TracingInputs"]

#: ``[{method_name: args_tuple}, ...]``, the format of TorchScript's ``trace_module``
TracingInputs = list[dict[str, tuple[Any, ...]]]


# Typed converters (not bare ``tuple``/``frozenset``): the signature of ``Strategy(...)``
# that type checkers show plugin authors comes from these.
def _frozen_names(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _name_set(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _types(value: Iterable[type]) -> tuple[type, ...]:
    return tuple(value)


@attrs.frozen
class Strategy:
    """A way of compiling a module, registered by a plugin's ``torchstitch_strategies`` hook.

    ``compile(module, context)`` receives the engine's shell of the user's module
    (children already compiled and stitched in) and returns the compiled module.
    It may raise anything; the engine wraps it in a
    :class:`~torchstitch.NodeCompileError` naming the node.
    """

    #: unique name, used by claims and rules
    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: kind of artifact produced: ``"torchscript"``, ``"export"``, ``"python"``, ...
    family: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: ``compile(module, context) -> nn.Module``
    compile: Callable[[torch.nn.Module, CompileContext], torch.nn.Module] = attrs.field(eq=False, repr=False)
    #: whether ``context.inputs`` must hold tracing inputs; such a strategy may run the module
    #: on them, so the engine starts it from the caller's buffers and puts them back after
    #: (one without inputs must not run the module)
    needs_inputs: bool = False
    #: families of explicitly claimed descendants this strategy can contain; ``None``: any
    can_contain: frozenset[str] | None = attrs.field(default=None, converter=_frozen_names)
    #: compare the compiled module with eager on its inputs after compiling
    verify: bool = False
    #: strategies to try, in order, when this one fails under ``on_error="fallback"``
    fallbacks: tuple[str, ...] = attrs.field(default=(), converter=_names)
    #: whether the strategy produces a compiled artifact (``False``: the node stays in Python)
    compiles: bool = True
    #: error raised at plan time when a parent cannot contain this strategy's family
    containment_error: type[StitchError] = PlanError
    #: strategies this one stands in for when its family is the compile ``target``
    #: (``export`` replaces ``trace``: one annotated model, several targets)
    replaces: frozenset[str] = attrs.field(default=frozenset(), converter=_name_set)
    #: advice appended to the plan error listing nodes that cannot go to this strategy's family
    retarget_hint: str = ""
    #: classes of the modules this strategy produces: one found in the caller's model is
    #: already compiled, a leaf shared as is (TorchScript's ``ScriptModule`` for ``script``)
    compiled_types: tuple[type, ...] = attrs.field(default=(), converter=_types)
    #: one line for ``torchstitch strategies`` and plan explanations
    description: str = ""
    #: the colour of this strategy's nodes in plan pictures (one of ``core.render.COLORS``);
    #: ``None``: a stable colour chosen from the strategy's name
    color: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(COLORS))
    )
    #: verification tolerance of this strategy's nodes (``|Δ| <= atol + rtol * |eager|``), for a
    #: strategy whose output cannot match eager to float32 precision (one computing in bfloat16);
    #: ``None``: by dtype.  The caller's ``atol=``/``rtol=`` win over these.
    atol: float | None = attrs.field(default=None, validator=tolerance_validator("Strategy."))
    rtol: float | None = attrs.field(default=None, validator=tolerance_validator("Strategy."))
    #: how the compile cache (``cache_dir=``) writes this strategy's compiled nodes and reads
    #: them back with the caller's weights; ``None``: its nodes are never cached
    cache: CacheCodec | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(CacheCodec))
    )

    def can_hold(self, child: Strategy) -> bool:
        """Whether a ``child`` node claimed by another strategy may sit inside this one's region."""
        return self.can_contain is None or child.family in self.can_contain


@attrs.frozen
class CompileContext:
    """Per-node, per-call information for strategies and tracing-input providers (read-only).

    One exists for each node being compiled; nothing in it is shared between calls.
    """

    #: the node being compiled
    node: Node
    #: options for this node's strategy (``script_options``, ``trace_options``, ...)
    options: Mapping[str, Any] = attrs.field(factory=dict)
    #: tracing inputs chosen for this node (empty when the strategy does not need any)
    inputs: TracingInputs = attrs.field(factory=list, eq=False, repr=False)
    #: where the inputs came from (the provider's plugin name), ``None`` without inputs
    inputs_source: str | None = None
    #: the caller's ``example_inputs`` for the root, as a tuple (``None`` if not given);
    #: the first set when several were given
    example_inputs: tuple[Any, ...] | None = attrs.field(default=None, eq=False, repr=False)
    #: every input set of ``example_inputs``, each a tuple (empty if not given)
    example_sets: tuple[tuple[Any, ...], ...] = attrs.field(default=(), eq=False, repr=False)
    #: the caller's per-path ``inputs=``
    caller_inputs: Mapping[str, TracingInputs] = attrs.field(factory=dict, eq=False, repr=False)
    #: inputs recorded for each path during the eager run on ``example_inputs``
    recorded_inputs: Mapping[str, TracingInputs] = attrs.field(factory=dict, eq=False, repr=False)
    #: how many distinct tracing inputs to ask for (``n_trace_checks``)
    n_trace_checks: int = 1
    #: every strategy of this call, by name (to look up the strategy behind a descendant's claim)
    strategies: Mapping[str, Strategy] = attrs.field(factory=dict, eq=False, repr=False)
    #: per-call memo shared by every node of this compile call (and only this call):
    #: strategies key their entries by their own name, e.g. ``("inductor", ...)``
    scratch: dict[Any, Any] = attrs.field(factory=dict, eq=False, repr=False)
    #: what the strategy says about how it compiled this node, for the plan: it adds
    #: entries (``context.notes["dynamic"] = "atoms: pos[0]"``); they become
    #: :attr:`Outcome.notes <torchstitch.Outcome.notes>` and show in ``plan.render()``.
    #: The one field a strategy writes; a failed attempt's notes are dropped.
    notes: dict[str, str] = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class ArtifactFormat:
    """A way of writing a compiled model to disk, provided by a plugin.

    ``save(module, path, extra, options)`` writes ``module`` and the ``extra``
    documents (``{PLAN_FILE: json, META_FILE: json}``, names from
    ``torchstitch.core.serialization``); ``options`` are the
    caller's ``ts.save(..., options=...)`` for this format (raise
    :class:`~torchstitch.ArtifactError` for one it does not take).
    ``load(path, map_location)`` returns ``(module, extra)`` with whatever
    documents it found.
    """

    #: format name, as in ``ts.save(..., format=name)``
    name: str
    #: whether this format can save ``module`` (used when ``format`` is not given)
    accepts: Callable[[torch.nn.Module], bool] = attrs.field(eq=False, repr=False)
    #: ``save(module, path, extra, options) -> None``
    save: Callable[[Any, str, dict[str, str], dict[str, Any]], None] = attrs.field(eq=False, repr=False)
    #: ``load(path, map_location) -> (module, extra)``
    load: Callable[[str, Any], tuple[Any, dict[str, str]]] = attrs.field(eq=False, repr=False)
    #: one line for ``torchstitch strategies`` and error messages
    description: str = ""
    #: whether ``save`` takes the option ``cache_dir`` (a compile cache folder, as
    #: ``ts.compile``'s): where the caller gives none, ``ts.save`` passes the one the model
    #: was compiled with
    takes_cache_dir: bool = False
