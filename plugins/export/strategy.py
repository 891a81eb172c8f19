"""The ``export`` strategy: ``torch.export.export`` of a claimed subtree.

Options (``Engine(strategy_options={"export": {...}})``; everything not listed
here is passed to ``torch.export.export``, e.g. ``strict=True``):

``dims``
    Named dynamic dimensions, shared by every exported node:
    ``{"atoms": {"pos": 0, "species": 0}, "edges": {"edge_index": 1}}`` declares a
    ``torch.export.Dim("atoms")`` for axis 0 of every ``forward`` argument called
    ``pos`` or ``species`` (an axis list, ``{"x": [0, 1]}``, marks several axes).
    Arguments are matched by name, so one declaration covers a model whose
    submodules use the same names; a node with none of the names is exported static.
``dynamic_shapes``
    Per path, torch.export's own ``dynamic_shapes`` for that node, used as is
    (``{"": {"pos": {0: Dim("atoms", min=1)}}}``); it beats ``dims``.
``make_fx``
    ``True``: trace the node with ``make_fx(tracing_mode="symbolic")`` first and
    export the resulting graph (NequIP's approach for ``torch.autograd.grad``
    inside ``forward``, e.g. forces; a direct export fails with "We found a fake
    tensor in the exported program constant's list").
``check_specialization``
    ``True`` (default): when the node has several tracing inputs, check that
    each fits the exported program (no dimension was specialised to the first
    input's size) and, if their shapes differ, export again on the second and
    compare the graphs. A mismatch is a :class:`~torchstitch.NodeCompileError`
    naming the path and the argument.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils import _pytree as pytree

from torchstitch import CompileContext, NodeCompileError, PlanError, Strategy
from torchstitch.plugins.toolkit import display_path, first_line, make_shell

from .module import ExportedModule

__all__ = ["STRATEGY", "compile_export", "dynamic_shapes_for"]

log = logging.getLogger(__name__)

#: option names the strategy consumes; the rest go to ``torch.export.export``
OWN_OPTIONS = ("dims", "dynamic_shapes", "make_fx", "check_specialization")


def compile_export(module: torch.nn.Module, context: CompileContext) -> ExportedModule:
    """Export ``module`` (the engine's shell, compiled children stitched in) on its first input.

    :param module: the node's shell.
    :param context: the node's context; ``context.inputs`` holds its tracing inputs.
    :raises NodeCompileError: on a specialised shape or an export failure with a known cure.
    """
    options = dict(context.options)
    own = {name: options.pop(name, None) for name in OWN_OPTIONS}
    options.setdefault("strict", False)
    path = context.node.path
    calls = [_forward_args(call, context) for call in context.inputs]
    eager = _inline_exported(module)
    spec = dynamic_shapes_for(eager, path, calls[0], own["dynamic_shapes"], own["dims"])
    program = _export(eager, calls[0], spec, bool(own["make_fx"]), options, context)
    if own["check_specialization"] is not False and len(calls) > 1:
        _check_specialization(eager, program, calls, spec, bool(own["make_fx"]), options, context)
    log.debug("%s: exported, dynamic shapes %s", display_path(path), spec)
    return ExportedModule(program, source=eager, path=path)


def _fail(context: CompileContext, message: str) -> NodeCompileError:
    claim = context.node.claim
    return NodeCompileError(
        message,
        path=context.node.path,
        strategy="export" if claim is None else claim.strategy,
        claimant=None if claim is None else claim.claimant,
    )


def _forward_args(call: Mapping[str, tuple[Any, ...]], context: CompileContext) -> tuple[Any, ...]:
    if set(call) != {"forward"}:
        raise _fail(
            context,
            f"export compiles forward only, but the tracing inputs call {sorted(call)}; "
            "claim the node 'script' or 'trace' to keep other methods",
        )
    return tuple(call["forward"])


def _inline_exported(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every :class:`ExportedModule` below it replaced by the eager code it came from.

    The parent is exported as one graph anyway; tracing the eager code keeps module
    names and hooks, and avoids nesting unlifted graphs. Private shells are made for
    every module on the way, so the engine's shells are not changed (``in_place=True``
    commits those).
    """
    replaced: dict[str, torch.nn.Module] = {}
    for name, child in module._modules.items():
        if child is None:
            continue
        if isinstance(child, ExportedModule) and child.source is not None:
            replaced[name] = child.source
            continue
        inlined = _inline_exported(child)
        if inlined is not child:
            replaced[name] = inlined
    if not replaced:
        return module
    shell = make_shell(module)
    shell._modules.update(replaced)
    return shell


def _parameter_names(module: torch.nn.Module) -> list[str]:
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def dynamic_shapes_for(
    module: torch.nn.Module,
    path: str,
    args: tuple[Any, ...],
    per_path: Mapping[str, Any] | None,
    dims: Mapping[str, Mapping[str, int | Sequence[int]]] | None,
) -> Any:
    """torch.export's ``dynamic_shapes`` for the node at ``path`` from the two option forms.

    A declaration that does not fit the inputs (an input the root does not take,
    an axis the tensor does not have) is a :class:`~torchstitch.PlanError`, which
    is a ``ValueError``, naming the input.

    :param per_path: ``{path: dynamic_shapes}``, used as is for that path.
    :param dims: ``{dim_name: {argument_name: axis or axes}}``.
    :returns: a dict by argument name, the per-path value, or ``None`` (static).
    """
    if per_path and path in per_path:
        return per_path[path]
    if not dims:
        return None
    names = _parameter_names(module)[: len(args)]
    spec: dict[str, dict[int, Any]] = {}
    for dim_name, where in dims.items():
        dim = torch.export.Dim(dim_name)
        for arg, axes in where.items():
            if arg not in names:
                if path == "":  # the root is where dims are declared: a name it lacks is a typo
                    raise PlanError(
                        f"dims[{dim_name!r}] names input {arg!r}, which the root's forward does not "
                        f"take (its inputs: {', '.join(names) or 'none'})",
                        path=path,
                        strategy="export",
                    )
                continue  # a descendant's export: dims name the inputs of every exported node
            value = args[names.index(arg)]
            for axis in [axes] if isinstance(axes, int) else axes:
                if not isinstance(value, torch.Tensor) or not -value.dim() <= axis < value.dim():
                    what = (
                        f"a {type(value).__name__}"
                        if not isinstance(value, torch.Tensor)
                        else f"a tensor of shape {tuple(value.shape)}"
                    )
                    raise PlanError(
                        f"dims[{dim_name!r}] declares axis {axis} of input {arg!r} dynamic, "
                        f"but {arg!r} is {what}",
                        path=path,
                        strategy="export",
                    )
                spec.setdefault(arg, {})[axis % value.dim()] = dim
    if not spec:
        return None
    return {name: spec.get(name) for name in names}


def _positional(spec: Any, module: torch.nn.Module, n_args: int) -> Any:
    """A by-name spec as a tuple (``make_fx`` graphs take ``arg0_1, arg1_1, ...``)."""
    if not isinstance(spec, Mapping):
        return spec
    names = _parameter_names(module)[:n_args]
    return tuple(spec.get(name) for name in names)


def _export(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    spec: Any,
    make_fx: bool,
    options: Mapping[str, Any],
    context: CompileContext,
) -> torch.export.ExportedProgram:
    target = module
    if make_fx:
        from torch.fx.experimental.proxy_tensor import make_fx as _make_fx

        target = _make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)
        spec = _positional(spec, module, len(args))
    try:
        return torch.export.export(target, args, dynamic_shapes=spec, **options)
    except Exception as exc:
        hint = _hint(exc)
        if hint is None:
            raise
        detail = first_line(exc).rstrip(".")
        fixes = _suggested_fixes(str(exc))
        raise _fail(context, f"torch.export failed: {type(exc).__name__}: {detail}. {hint}{fixes}") from exc


def _suggested_fixes(text: str) -> str:
    """torch's "Suggested fixes:" lines (for a specialised dynamic dim), if it gave any."""
    _, found, rest = text.partition("Suggested fixes:")
    if not found:
        return ""
    lines = [line.strip() for line in rest.strip().split("\n\n")[0].splitlines()[:3] if line.strip()]
    return " (torch suggests: " + " ".join(lines) + ")" if lines else ""


def _hint(exc: Exception) -> str | None:
    text = str(exc)
    if "GuardOnDataDependentSymNode" in type(exc).__name__ or "data-dependent" in text:
        return (
            "The code branches on tensor values: rewrite the branch with torch.cond, or claim "
            "the module 'script' (TorchScript target) or 'unsupported' (kept in Python, outside "
            "every export region)"
        )
    if "Constraints violated" in text:
        return (
            "A dimension declared dynamic was specialised by the code (e.g. a branch on its size); "
            "make the code size-independent, or drop it from the export options 'dims' / "
            "'dynamic_shapes'"
        )
    if "fake tensor in the exported program constant" in text:
        return (
            "This usually means torch.autograd.grad (e.g. forces) inside forward: pass "
            "strategy_options={'export': {'make_fx': True}}"
        )
    return None


def _user_placeholders(program: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    users = set(program.graph_signature.user_inputs)
    return [n for n in program.graph.nodes if n.op == "placeholder" and n.name in users]


def _misfit(program: torch.export.ExportedProgram, args: tuple[Any, ...]) -> str | None:
    """Why ``args`` cannot run through ``program`` (a specialised or out-of-range dimension)."""
    leaves = pytree.tree_leaves(args)
    for index, (node, value) in enumerate(zip(_user_placeholders(program), leaves)):
        expected = node.meta.get("val")
        if not isinstance(value, torch.Tensor) or not isinstance(expected, torch.Tensor):
            continue
        if expected.dim() != value.dim():
            return f"input {index} ({node.name}) has {value.dim()} dimensions, the export {expected.dim()}"
        for axis, (size, actual) in enumerate(zip(expected.shape, value.shape)):
            if isinstance(size, int):
                if size != actual:
                    return (
                        f"{node.name} axis {axis} was specialised to {size} but another tracing "
                        f"input has {actual}"
                    )
                continue
            bounds = program.range_constraints.get(size.node.expr)
            if bounds is not None and not (bounds.lower <= actual <= bounds.upper):
                return (
                    f"{node.name} axis {axis} is only valid in [{bounds.lower}, {bounds.upper}] "
                    f"(a guard the code added) but another tracing input has {actual}"
                )
    return None


def _shapes(args: tuple[Any, ...]) -> list[Any]:
    return [tuple(v.shape) if isinstance(v, torch.Tensor) else None for v in pytree.tree_leaves(args)]


def _check_specialization(
    module: torch.nn.Module,
    program: torch.export.ExportedProgram,
    calls: list[tuple[Any, ...]],
    spec: Any,
    make_fx: bool,
    options: Mapping[str, Any],
    context: CompileContext,
) -> None:
    cure = (
        "Declare the dimension dynamic: strategy_options={'export': {'dims': {NAME: {ARG: AXIS}}}} "
        f"or {{'dynamic_shapes': {{{context.node.path!r}: ...}}}}"
    )
    for i, args in enumerate(calls[1:], start=1):
        problem = _misfit(program, args)
        if problem is not None:
            if "guard" in problem:
                cure = "The code depends on that size (e.g. a branch on x.shape): make it size-independent"
            raise _fail(context, f"export specialised a shape: {problem} (tracing input {i}). {cure}")
    different = next((args for args in calls[1:] if _shapes(args) != _shapes(calls[0])), None)
    if different is None:
        return
    other = _export(module, different, spec, make_fx, options, context)
    if other.graph_module.code != program.graph_module.code:
        raise _fail(
            context,
            "export specialised on input shapes: exporting with two input sizes "
            f"({_shapes(calls[0])} and {_shapes(different)}) gave different graphs, so the "
            "code depends on a size (e.g. a branch on x.shape). Make the branch shape-independent, "
            "or claim the module 'script'",
        )


STRATEGY = Strategy(
    name="export",
    family="export",
    compile=compile_export,
    needs_inputs=True,
    verify=True,
    can_contain={"export"},
    # a script or trace claim says the module compiles to one program; under
    # target="export" it is exported instead, at its own node unless its claim is portable
    # (then an enclosing export inlines it): real data-dependent code fails there, at its path
    replaces={"trace", "script"},
    retarget_hint=(
        "If the code has no data-dependent branch, export it with its "
        "parent: rules=torchstitch.plugins.export.whole_model_rules()"
    ),
    description="torch.export.export (non-strict): one graph for deployment (export/AOTInductor)",
    color="yellow",
)
