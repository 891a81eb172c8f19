"""Tracing inputs: the caller's ``inputs=`` checked against the plan, and the one resolver
that asks the providers (``torchstitch_tracing_inputs``) for a module's inputs, used by
the engine and by the e3nn compatibility module (``plugins/e3nn/jit.py``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import torch

from .errors import PlanError
from .inputs import check_tracing_inputs, normalize_tracing_inputs
from .ir import Node, Plan
from .plugin_manager import PluginSet
from .strategy import CompileContext, TracingInputs

__all__ = ["Resolved", "caller_inputs", "resolve", "resolve_tracing_inputs"]

log = logging.getLogger(__name__)


@attrs.frozen
class Resolved:
    """What the providers answered for one module."""

    #: the checked inputs; empty when no provider had any
    inputs: TracingInputs = attrs.field(eq=False, repr=False)
    #: the plugin that answered (``None``: nobody)
    source: str | None
    #: the plugins asked, in order
    asked: tuple[str, ...]


def resolve_tracing_inputs(
    module: torch.nn.Module, n: int = 1, *, plugins: Iterable[object | str] | None = None
) -> Resolved:
    """Ask the tracing-input providers for ``n`` inputs of ``module`` on its own (as the
    root of a call), first answer wins, checked: what the engine does for a node.

    :param plugins: as for :func:`~torchstitch.compile` (``None``: the default manager).
    :raises TracingInputsError: an answer is malformed (the message names the provider).
    """
    node = Node(path="", type_name=f"{type(module).__module__}.{type(module).__qualname__}")
    context = CompileContext(node=node, n_trace_checks=n)
    return resolve(PluginSet.from_plugins(plugins), module, node, n, context)


def resolve(
    plugin_set: PluginSet, module: torch.nn.Module, node: Node, n: int, context: CompileContext
) -> Resolved:
    """Ask the providers for ``module``'s tracing inputs at ``node``, first answer wins, and
    check it (the one resolver: :func:`resolve_tracing_inputs` and the engine use it).

    :raises TracingInputsError: the answer is malformed (it names the provider).
    """
    asked, provider, inputs = plugin_set.call_first(
        "torchstitch_tracing_inputs", module=module, node=node, n=n, context=context
    )
    if provider is None:
        return Resolved([], None, tuple(asked))
    checked = check_tracing_inputs(module, inputs, path=node.path, provider=provider)
    return Resolved(checked, provider, tuple(asked))


def caller_inputs(inputs: Mapping[str, Any] | None, plan: Plan) -> dict[str, TracingInputs]:
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs= must be a dict of path -> tracing inputs, got {type(inputs).__name__}")
    out = {}
    for path, value in inputs.items():
        if path not in plan:
            known = ", ".join(repr(n.path) for n in plan.walk() if n.path)
            raise PlanError(
                f"inputs= names path {path!r}, which is not in the model; paths: {known or '(none)'}",
                path=path,
            )
        out[path] = normalize_tracing_inputs(value, path)
    return out
