"""The ``export`` strategy: ``torch.export.export`` of a claimed subtree.

Options (``Engine(strategy_options={"export": {...}})``; everything not listed
here is passed to ``torch.export.export``, e.g. ``strict=True``):

Axes whose size differs between the node's calls (the root's input sets, a node's
recorded inputs) are dynamic without any option; see :mod:`.dims` for their names.

``dims``
    Named dynamic dimensions, shared by every exported node:
    ``{"atoms": {"pos": 0, "species": 0}, "edges": {"edge_index": 1}}`` declares a
    ``torch.export.Dim("atoms")`` for axis 0 of every ``forward`` argument called
    ``pos`` or ``species`` (an axis list, ``{"x": [0, 1]}``, marks several axes).
    Arguments are paths: ``data['pos']`` (inside a dict), ``args[0]`` (``forward(*args)``);
    a key may be a ``Dim`` with bounds (``{Dim("seq", max=64): {"input_ids": 1}}``).
    Arguments are matched by name, so one declaration covers a model whose
    submodules use the same names; a node with none of the names takes none of them.
``dynamic_shapes``
    Per path, torch.export's own ``dynamic_shapes`` for that node, used as is
    (``{"": {"pos": {0: Dim("atoms", min=1)}}}``); it beats ``dims`` and inferred dims.
``make_fx``
    ``None`` (default): when plain export fails on ``torch.autograd.grad`` inside
    ``forward`` (forces: "We found a fake tensor in the exported program constant's
    list") or on a TorchScript module in the region, trace with
    ``make_fx(tracing_mode="symbolic")`` first and export that graph (NequIP's
    approach); the plan notes ``via: make_fx``. ``True``: always; ``False``: never.
``check_specialization``
    ``True`` (default): when the node has several tracing inputs, check that
    each fits the exported program (no dimension was specialised to the first
    input's size) and, if their shapes differ, export again on the second and
    compare the graphs. A mismatch is a :class:`~torchstitch.NodeCompileError`
    naming the path and the argument.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch.utils import _pytree as pytree

from torchstitch import CacheCodec, CompileContext, NodeCompileError, Strategy, TorchstitchWarning
from torchstitch.plugins.toolkit import display_path, exception_summary, first_line, make_shell, warn

from .cache import EXPORT_CODEC_VERSION, load_exported, save_exported
from .diagnosis import Diagnosis, diagnose
from .dims import (
    Axis,
    Leaf,
    declared_axes,
    describe_dims,
    export_spec,
    inferred_axes,
    leaves_of,
    size_problems,
)
from .guards import user_placeholders
from .module import ExportedModule
from .probing import Finding, deepest_failure, quiet_failures

__all__ = ["STRATEGY", "compile_export", "dynamic_shapes_for"]

log = logging.getLogger(__name__)

#: option names the strategy consumes; the rest go to ``torch.export.export``
OWN_OPTIONS = ("dims", "dynamic_shapes", "make_fx", "check_specialization")

#: ``spec_of(target)``: the ``dynamic_shapes`` for exporting ``target`` (the module or its make_fx graph)
SpecOf = Callable[[torch.nn.Module, tuple[Any, ...]], Any]


def compile_export(module: torch.nn.Module, context: CompileContext) -> ExportedModule:
    """Export ``module`` (the engine's shell, compiled children stitched in) on one of its calls.

    Axes whose size differs between the node's calls, and those ``dims`` declares, are
    dynamic; the call exported on is the one whose sizes torch cannot mistake for fixed.

    :param module: the node's shell.
    :param context: the node's context; ``context.inputs`` holds its tracing inputs.
    :raises NodeCompileError: on a specialised shape or an export failure (first lines of
        torch's message and the cure; the whole message is in the debug log).
    """
    options = dict(context.options)
    own = {name: options.pop(name, None) for name in OWN_OPTIONS}
    options.setdefault("strict", False)
    path = context.node.path
    calls = [_forward_args(call, context) for call in context.inputs]
    eager = _inline_exported(module)
    named = [leaves_of(eager, args) for args in calls]
    declared = declared_axes(own["dims"], named[0], path)
    _check_declared_vary(declared, named, context)
    dynamic: dict[Axis, Any] = {axis: torch.export.Dim.DYNAMIC for axis in inferred_axes(named)}
    dynamic.update(declared)
    user_spec = (own["dynamic_shapes"] or {}).get(path)
    chosen = _choose_call(named, dynamic, context)

    def spec_of(target: torch.nn.Module, args: tuple[Any, ...]) -> Any:
        if user_spec is not None:
            return user_spec if target is eager else _positional(user_spec, eager, len(args))
        return export_spec(target, args, dynamic)

    program, via_make_fx = _export_some_way(eager, calls[chosen], spec_of, own["make_fx"], options, context)
    if own["check_specialization"] is not False and len(calls) > 1:
        # every axis that differs between the calls is dynamic unless the caller's own
        # dynamic_shapes say otherwise: only then can a second export show a specialisation
        # that the check of every call against the program's shapes and ranges misses
        compare = user_spec is not None
        _check_specialization(eager, program, calls, chosen, spec_of, via_make_fx, options, context, compare)
    _note(context, program, named[chosen], declared, via_make_fx)
    if not dynamic and user_spec is None and not own["dims"] and not own["dynamic_shapes"]:
        _warn_static(context, named[chosen])
    log.debug("%s: exported, dynamic: %s", display_path(path), context.notes.get("dynamic", "none"))
    return ExportedModule(program, source=eager, path=path)


def _note(
    context: CompileContext,
    program: torch.export.ExportedProgram,
    leaves: list[Leaf],
    declared: Mapping[Axis, Any],
    via_make_fx: bool,
) -> None:
    """Say in the plan which dims the program has and how it was traced."""
    dims = describe_dims(program, leaves, {axis: dim.__name__ for axis, dim in declared.items()})
    if dims:
        context.notes["dynamic"] = dims
        context.scratch["export", "dynamic seen"] = True
    if via_make_fx:
        context.notes["via"] = "make_fx"


def _warn_static(context: CompileContext, leaves: list[Leaf]) -> None:
    """Warn, once per compile call, that the artifact only takes the example sizes."""
    if context.scratch.get(("export", "dynamic seen")) or context.scratch.get(("export", "static warned")):
        return
    context.scratch["export", "static warned"] = True
    if context.node.path == "":
        sizes = ", ".join(f"{leaf.name} {tuple(leaf.value.shape)}" for leaf in leaves if _is_tensor(leaf))
    else:
        example = _root_sets(context)[:1]
        sizes = ", ".join(
            str(tuple(v.shape)) for v in pytree.tree_leaves(example) if isinstance(v, torch.Tensor)
        )
    warn(
        f"torch.export fixed every size of {display_path(context.node.path)} to the example inputs "
        f"(root: {sizes or 'no tensors'}): the artifact only accepts these sizes. To make it dynamic, "
        "give example_inputs as a list of input sets of different sizes "
        "(example_inputs=[(pos6, species6), (pos9, species9)]), or declare the dims: "
        "strategy_options={'export': {'dims': {'atoms': {'pos': 0}}}}",
        TorchstitchWarning,
    )


def _is_tensor(leaf: Leaf) -> bool:
    return isinstance(leaf.value, torch.Tensor)


def _root_sets(context: CompileContext) -> list[Any]:
    """The caller's input sets for the root (``inputs={"": [...]}``, else ``example_inputs``)."""
    given = context.caller_inputs.get("")
    if given:
        return [call.get("forward") for call in given]
    return list(context.example_sets)


def _check_declared_vary(
    declared: Mapping[Axis, Any], named: list[list[Leaf]], context: CompileContext
) -> None:
    """A declared dim must differ between the sets, or torch.export cannot be checked on it.

    Only where the node's calls are the caller's sets (one call per set, as at the root):
    a descendant called twice per set may well see one size twice.
    """
    if len(named) < 2 or len(named) != len(_root_sets(context)):
        return
    for (index, axis), dim in declared.items():
        sizes = {leaves[index].value.shape[axis] for leaves in named}
        if len(sizes) == 1:
            raise _fail(
                context,
                f"dims[{dim.__name__!r}] declares {named[0][index].axis_name(axis)} dynamic, but it is "
                f"{sizes.pop()} in every one of the {len(named)} input sets: give input sets of "
                "different sizes in that dim, so that the export is checked on more than one",
            )


def _choose_call(named: list[list[Leaf]], dynamic: Mapping[Axis, Any], context: CompileContext) -> int:
    """The call to export on: the first whose dynamic sizes torch cannot take for fixed ones.

    Sizes 0 and 1, and sizes that coincide with a fixed axis, make torch (or make_fx)
    specialise the axis; exporting on another call avoids it. What cannot be avoided is
    a TorchstitchWarning naming the axis and the sizes to use.
    """
    if not dynamic:
        return 0
    sizes = {(i, axis): tuple(leaves[i].value.shape[axis] for leaves in named) for i, axis in dynamic}
    problems = [size_problems(leaves, list(dynamic), sizes) for leaves in named]
    chosen = min(range(len(named)), key=lambda i: len(problems[i]))
    small = [
        f"{p} (tracing input {i})" for i, found in enumerate(problems) for p in found if "specialises" in p
    ]
    troubles = [p for p in problems[chosen] if "specialises" not in p] + small
    if troubles:
        warn(
            f"export of {display_path(context.node.path)}: {'; '.join(troubles)}. Dynamic sizes "
            "should be >= 2 and differ from every fixed size and from each other in each input "
            "set (e.g. 6 and 9 atoms with xyz = 3), or torch may fix them",
            TorchstitchWarning,
        )
    if chosen:
        log.debug(
            "%s: exported on tracing input %d: %s", display_path(context.node.path), chosen, problems[0]
        )
    return chosen


def _fail(context: CompileContext, message: str, *, at: str | None = None) -> NodeCompileError:
    """The node's NodeCompileError; ``at``: the path of the submodule found to fail in it."""
    claim = context.node.claim
    return NodeCompileError(
        message,
        path=context.node.path if at is None else at,
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


def dynamic_shapes_for(
    module: torch.nn.Module,
    path: str,
    args: tuple[Any, ...],
    per_path: Mapping[str, Any] | None,
    dims: Mapping[Any, Mapping[str, int | Sequence[int]]] | None,
) -> Any:
    """torch.export's ``dynamic_shapes`` for the node at ``path`` from the two option forms.

    A declaration that does not fit the inputs (an input the root does not take,
    an axis the tensor does not have) is a :class:`~torchstitch.PlanError`, which
    is a ``ValueError``, naming the input.

    :param per_path: ``{path: dynamic_shapes}``, used as is for that path.
    :param dims: ``{dim_name or Dim: {argument_name: axis or axes}}`` (argument names as in
        :mod:`.dims`: ``pos``, ``data['pos']``, ``args[0]``).
    :returns: a dict by argument name, the per-path value, or ``None`` (static).
    """
    if per_path and path in per_path:
        return per_path[path]
    return export_spec(module, args, declared_axes(dims, leaves_of(module, args), path))


def _positional(spec: Any, module: torch.nn.Module, n_args: int) -> Any:
    """A by-name spec as a tuple (``make_fx`` graphs take ``arg0_1, arg1_1, ...``)."""
    if not isinstance(spec, Mapping):
        return spec
    names = _parameter_names(module)[:n_args]
    return tuple(spec.get(name) for name in names)


def _parameter_names(module: torch.nn.Module) -> list[str]:
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _export_some_way(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    spec_of: SpecOf,
    make_fx: bool | None,
    options: Mapping[str, Any],
    context: CompileContext,
) -> tuple[torch.export.ExportedProgram, bool]:
    """Export plainly, or through ``make_fx`` when that is what the region needs.

    ``make_fx=None`` (default): plain export first, and ``make_fx`` when it fails for a
    reason ``make_fx`` cures (``torch.autograd.grad``, TorchScript modules in the region);
    ``make_fx`` first where the region's code shows such a reason before tracing
    (:func:`_foreseen_make_fx_reason`), since a plain export fails on it only once it has
    traced the whole region (a third of a NequIP model's export time); ``True``: ``make_fx``
    only; ``False``: plain only.

    :returns: the program and whether it went through ``make_fx``.
    """
    if make_fx is None:
        foreseen = _foreseen_make_fx_reason(module, context.node.path)
        if foreseen is not None:
            return _make_fx_first(module, args, spec_of, options, context, foreseen)
    if make_fx is not True:
        try:
            return _trace_and_export(module, args, spec_of, False, options), False
        except Exception as exc:
            reason = None if make_fx is False else _make_fx_cures(exc, module, context.node.path)
            if reason is None:
                raise _failure(exc, module, args, False, make_fx is False, context) from exc
            log.debug(
                "%s: plain export failed (%s); retrying with make_fx, because %s",
                display_path(context.node.path),
                exception_summary(exc),
                reason,
            )
    try:
        return _trace_and_export(module, args, spec_of, True, options), True
    except Exception as exc:
        raise _failure(exc, module, args, True, False, context) from exc


def _make_fx_first(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    spec_of: SpecOf,
    options: Mapping[str, Any],
    context: CompileContext,
    reason: str,
) -> tuple[torch.export.ExportedProgram, bool]:
    """``make_fx`` then export; if that fails, plain export, as when plain export goes first:
    the failure reported is the ``make_fx`` one where plain export fails for a reason
    ``make_fx`` cures, else plain export's own."""
    path = context.node.path
    log.debug("%s: tracing with make_fx first, because %s", display_path(path), reason)
    try:
        return _trace_and_export(module, args, spec_of, True, options), True
    except Exception as exc:
        traced_failure = exc
    try:
        return _trace_and_export(module, args, spec_of, False, options), False
    except Exception as exc:
        if _make_fx_cures(exc, module, path) is None:
            raise _failure(exc, module, args, False, False, context) from exc
    raise _failure(traced_failure, module, args, True, False, context) from traced_failure


def _foreseen_make_fx_reason(module: torch.nn.Module, path: str) -> str | None:
    """A reason for ``make_fx`` that the region shows before anything is traced: a
    ``forward`` that calls ``torch.autograd.grad`` (itself or through the module-level
    functions it calls, read from their bytecode's names), or TorchScript modules."""
    seen: set[Any] = set()
    for name, child in module.named_modules():
        if _calls_autograd_grad(getattr(type(child), "forward", None), _GRAD_SEARCH_DEPTH, seen):
            return f"{display_path(_join(path, name))} calls torch.autograd.grad (e.g. forces)"
    scripted = _script_modules(module, path)
    if scripted:
        return f"the region holds TorchScript modules ({', '.join(map(display_path, scripted))})"
    return None


#: how many module-level function calls deep _calls_autograd_grad looks (MACE: forward ->
#: get_outputs -> compute_forces -> torch.autograd.grad)
_GRAD_SEARCH_DEPTH = 3


def _calls_autograd_grad(function: Any, depth: int, seen: set[Any]) -> bool:
    """Whether ``function``'s code names ``torch.autograd.grad``, or a module-level function
    it names does, ``depth`` calls down; each code object is read once per ``seen``."""
    code = getattr(function, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    names = set(code.co_names)
    if {"autograd", "grad"} <= names:
        return True
    if depth == 0:
        return False
    scope = getattr(function, "__globals__", {})
    return any(
        _calls_autograd_grad(scope[name], depth - 1, seen)
        for name in names
        if inspect.isfunction(scope.get(name))
    )


def _trace_and_export(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    spec_of: SpecOf,
    make_fx: bool,
    options: Mapping[str, Any],
) -> torch.export.ExportedProgram:
    target = module
    if make_fx:
        from torch.fx.experimental.proxy_tensor import make_fx as _make_fx

        with quiet_failures("make_fx"):
            target = _make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)
    with quiet_failures("torch.export"):
        return torch.export.export(target, args, dynamic_shapes=spec_of(target, args), **options)


def _script_modules(module: torch.nn.Module, path: str) -> list[str]:
    """Paths of the TorchScript modules (already compiled by the caller) inside ``module``."""
    return [
        _join(path, name)
        for name, child in module.named_modules()
        if isinstance(child, torch.jit.ScriptModule)
    ]


def _join(path: str, name: str) -> str:
    return ".".join(part for part in (path, name) if part)


def _make_fx_cures(exc: Exception, module: torch.nn.Module, path: str) -> str | None:
    """Why tracing with ``make_fx`` first would get past ``exc``, or ``None``."""
    if "fake tensor in the exported program constant" in str(exc):
        return "torch.autograd.grad inside forward (e.g. forces) needs it"
    scripted = _script_modules(module, path)
    if scripted:
        return f"the region holds TorchScript modules ({', '.join(map(display_path, scripted))})"
    return None


#: reasons a child can have on its own: worth looking for the deepest submodule that fails
_LOCAL_REASONS = frozenset(
    {"data_dependent_branch", "data_dependent_value", "unsupported_operator", "non_torch_code", "other"}
)


def _failure(
    exc: Exception,
    module: torch.nn.Module,
    args: tuple[Any, ...],
    via_make_fx: bool,
    forbidden: bool,
    context: CompileContext,
) -> NodeCompileError:
    """The NodeCompileError for a failed export, at the deepest submodule whose own export
    fails when there is one: torch's first line, the user's source line, the reason code
    (docs/export-reasons.md) and the cure.

    torch's whole message (graph dumps of thousands of lines, sometimes) goes to the
    debug log only; the original stays chained by the caller.
    """
    path = context.node.path
    way = "torch.export after make_fx" if via_make_fx else "torch.export"
    log.debug("%s: %s failed; torch's full message:\n%s", display_path(path), way, exc)
    diagnosis = diagnose(exc)
    if forbidden and _make_fx_cures(exc, module, path) is not None:
        diagnosis = attrs.evolve(
            diagnosis,
            hint=f"{_make_fx_cures(exc, module, path)}; plain export cannot trace it: drop the export "
            "option 'make_fx': False (torchstitch then retries with make_fx), or pass 'make_fx': True",
        )
    cause = _specialised_where(exc, module, path) if diagnosis.code == "constraint_violation" else ""
    finding = _deepest(module, args, diagnosis, context)
    if finding is not None:
        return _fail(
            context,
            f"{way} of {display_path(path)} failed, and {display_path(finding.path)} "
            f"({finding.type_name}) is the deepest submodule whose own export fails: "
            f"{finding.diagnosis.message()}",
            at=finding.path,
        )
    summary = _summary(str(exc))
    where = f" (at {diagnosis.source})" if diagnosis.source is not None else ""
    return _fail(
        context,
        f"{way} failed: {diagnosis.error_type}: {summary}{where}. {cause}{diagnosis.hint} "
        f"[reason: {diagnosis.code}; torch's whole message is in the debug log of {__name__!r}]",
    )


def _deepest(
    module: torch.nn.Module, args: tuple[Any, ...], diagnosis: Diagnosis, context: CompileContext
) -> Finding | None:
    """The deepest submodule below the node whose own export fails, for a reason a
    submodule can have on its own (a branch, an operator); ``None``: the node's own code."""
    if diagnosis.code not in _LOCAL_REASONS:
        return None
    try:
        return deepest_failure(module, [{"forward": args}], context.node.path)
    except Exception:  # the search is a courtesy: the node's own error stands
        log.debug("%s: no failing submodule found", display_path(context.node.path), exc_info=True)
        return None


def _summary(text: str) -> str:
    """torch's first line and the ``- ...`` lines under it (what was violated), short."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    details = [line.strip() for line in lines[1:] if line.lstrip().startswith("- ")][:3]
    return " ".join([lines[0].strip().rstrip("."), *details])[:1200].rstrip(".")


def _specialised_where(exc: BaseException, module: torch.nn.Module, path: str) -> str:
    """Where the code fixed a dynamic size, from the guards torch's ShapeEnv recorded.

    torch's "Constraints violated" text names the dim but not the code; the ShapeEnv
    that raised it (a local of the frames in the exception's traceback) keeps the source
    location of every guard and replacement. Best effort: "" when torch changes shape.
    """
    found = []
    for where, what in _guard_locations(exc):
        place = _module_at(module, path, where)
        source = linecache.getline(where.filename, where.lineno or 0).strip()
        found.append(f"{place} ({os.path.basename(where.filename)}:{where.lineno}: {source}) ({what})")
        if len(found) == 2:
            break
    return f"The size was fixed by {'; '.join(found)}. " if found else ""


def _guard_locations(exc: BaseException) -> Iterator[tuple[Any, str]]:
    """``(frame summary, guard)`` for each user-code guard of the ShapeEnv behind ``exc``."""
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    torch_dir = os.path.dirname(torch.__file__)
    for env in _shape_envs(exc, ShapeEnv):
        slocs = [(sloc, f"guard {guard.expr}") for guard in env.guards for sloc in [guard.sloc]]
        slocs += [
            (sloc, f"{symbol} fixed to {env.replacements.get(symbol)}")
            for symbol, sloc in env.replacements_slocs.items()
        ]
        for sloc, what in slocs:
            frame = getattr(sloc, "framework_loc", None)
            if getattr(frame, "filename", torch_dir).startswith(torch_dir):
                continue
            yield frame, what


def _shape_envs(exc: BaseException, kind: type) -> list[Any]:
    """The ``kind`` objects among the locals of every frame of ``exc`` and its chained causes."""
    envs: list[Any] = []
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        stack += [current.__cause__, current.__context__]
        tb = current.__traceback__
        while tb is not None:
            for value in list(tb.tb_frame.f_locals.values()):
                if isinstance(value, kind) and all(value is not env for env in envs):
                    envs.append(value)
            tb = tb.tb_next
    return envs


def _module_at(module: torch.nn.Module, path: str, frame: Any) -> str:
    """The path of the module in ``module`` whose ``forward`` holds ``frame``'s line, or the file."""
    for name, child in module.named_modules():
        code = getattr(type(child).forward, "__code__", None)
        if code is None or code.co_filename != frame.filename or code.co_name != frame.name:
            continue
        lines = [line for _, _, line in code.co_lines() if line is not None]
        if lines and min(lines + [code.co_firstlineno]) <= frame.lineno <= max(lines):
            return display_path(_join(path, name))
    return f"code outside the region's forward methods ({frame.name})"


def _misfit(program: torch.export.ExportedProgram, args: tuple[Any, ...]) -> str | None:
    """Why ``args`` cannot run through ``program`` (a specialised or out-of-range dimension)."""
    leaves = pytree.tree_leaves(args)
    for index, (node, value) in enumerate(zip(user_placeholders(program), leaves)):
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
            if bounds is not None and actual in (0, 1) and bounds.lower == 2:
                continue  # torch's own lower bound for every dynamic dim, not the code's
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
    chosen: int,
    spec_of: SpecOf,
    via_make_fx: bool,
    options: Mapping[str, Any],
    context: CompileContext,
    compare: bool,
) -> None:
    """Check that every call fits ``program``; with ``compare``, also export on a call of
    other sizes and compare the graphs (a size the code branched on without a guard)."""
    cure = (
        "Declare the dimension dynamic: strategy_options={'export': {'dims': {NAME: {ARG: AXIS}}}} "
        f"or {{'dynamic_shapes': {{{context.node.path!r}: ...}}}}"
    )
    for i, args in enumerate(calls):
        problem = None if i == chosen else _misfit(program, args)
        if problem is not None:
            if "guard" in problem:
                cure = "The code depends on that size (e.g. a branch on x.shape): make it size-independent"
            raise _fail(context, f"export specialised a shape: {problem} (tracing input {i}). {cure}")
    base = _shapes(calls[chosen])
    different = next((args for args in calls if _shapes(args) != base), None)
    if different is None or not compare:
        return
    try:
        other = _trace_and_export(module, different, spec_of, via_make_fx, options)
    except Exception as exc:
        if "0/1 specialized" in str(exc):  # a size torch fixes: said by _choose_call's warning
            log.debug("%s: no second export to compare: %s", display_path(context.node.path), first_line(exc))
            return
        raise _failure(exc, module, different, via_make_fx, False, context) from exc
    if other.graph_module.code != program.graph_module.code:
        raise _fail(
            context,
            "export specialised on input shapes: exporting with two input sizes "
            f"({base} and {_shapes(different)}) gave different graphs, so the "
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
    # cache_dir=: the program is cached by architecture and refitted with the caller's tensors
    cache=CacheCodec(
        save=save_exported,
        load=functools.partial(load_exported, inline=_inline_exported),
        version=EXPORT_CODEC_VERSION,
    ),
)
