"""Dynamic dimensions of an exported node: declared (``dims``), inferred from its calls, read back.

Every tensor axis is named by argument and axis, the way a user writes it in Python:
``pos[0]``, ``data['pos'][0]`` (a tensor inside a dict argument), ``args[1][0]`` (the
second positional of a ``forward(*args)``). ``dims`` use the same names without the
axis (``{"atoms": {"data['pos']": 0}}``), and the plan shows the dims in them.

Why ``Dim.DYNAMIC`` for the axes inferred from the calls, and named ``Dim`` objects only
for the user's ``dims``: two named ``Dim`` s that the code proves equal (``pos[0]`` and
``species[0]``) are a "Constraints violated" error in torch.export, so naming every
differing axis would fail on every model with two per-atom inputs. ``Dim.DYNAMIC`` lets
torch find the equal (and derived) dims itself and still fails, instead of silently
specialising like ``Dim.AUTO``, when the code fixes the size; the symbols of the
program's inputs then say which axes torch found equal, and that is what the plan shows.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
from torch.utils import _pytree as pytree
from torch.utils._sympy.numbers import int_oo

from torchstitch import PlanError

__all__ = [
    "Axis",
    "Leaf",
    "declared_axes",
    "describe_dims",
    "export_spec",
    "inferred_axes",
    "leaves_of",
    "size_problems",
]

log = logging.getLogger(__name__)

#: ``(leaf index, axis)``: one axis of one tensor of a call's flattened arguments
Axis = tuple[int, int]


@attrs.frozen
class Leaf:
    """One leaf of a call's flattened arguments and its Python name (``data['pos']``)."""

    name: str
    value: Any = attrs.field(eq=False, repr=False)

    def axis_name(self, axis: int) -> str:
        return f"{self.name}[{axis}]"


def _argument_names(module: torch.nn.Module, n_args: int) -> list[str]:
    """Names of ``n_args`` positional arguments of ``forward``: ``pos``, then ``args[i]`` for ``*args``."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in parameters if p.kind == p.VAR_POSITIONAL), "args")
    return [named[i] if i < len(named) else f"{star}[{i - len(named)}]" for i in range(n_args)]


def leaves_of(module: torch.nn.Module, args: tuple[Any, ...]) -> list[Leaf]:
    """The leaves of ``args`` in ``pytree`` order (that of the program's inputs), each named."""
    out = []
    for name, value in zip(_argument_names(module, len(args)), args):
        for keypath, leaf in pytree.tree_flatten_with_path(value)[0]:
            out.append(Leaf(name + pytree.keystr(keypath), leaf))
    return out


def _as_dim(key: Any, path: str) -> torch.export.Dim:
    """A ``dims`` key as a ``Dim``: a name, or the user's own ``Dim("seq", max=64)`` (bounds)."""
    if isinstance(key, str):
        return torch.export.Dim(key)
    if isinstance(key, torch.export.Dim):
        return key
    raise PlanError(
        f"dims keys are dim names or torch.export.Dim objects (Dim('seq', max=64)), got {key!r}",
        path=path,
        strategy="export",
    )


def declared_axes(
    dims: Mapping[Any, Mapping[str, int | Sequence[int]]] | None, leaves: list[Leaf], path: str
) -> dict[Axis, torch.export.Dim]:
    """The axes ``dims`` declares dynamic among ``leaves``, with their ``Dim``.

    At the root, where ``dims`` are declared, a name that is no input (a typo, an
    argument of ``**kwargs``, a name of ``forward(*args)`` instead of ``args[0]``) or an
    axis the tensor lacks is a :class:`~torchstitch.PlanError` naming it; a descendant
    exported on its own takes the declarations whose names it has.

    :param dims: ``{name or Dim: {argument: axis or axes}}``.
    """
    by_name = {leaf.name: i for i, leaf in enumerate(leaves)}
    out: dict[Axis, torch.export.Dim] = {}
    for key, where in (dims or {}).items():
        dim = _as_dim(key, path)
        for arg, axes in where.items():
            index = by_name.get(arg)
            if index is None:
                if path == "":
                    raise PlanError(_unknown_input(dim.__name__, arg, leaves), path=path, strategy="export")
                continue
            value = leaves[index].value
            for axis in [axes] if isinstance(axes, int) else axes:
                if not isinstance(value, torch.Tensor) or not -value.dim() <= axis < value.dim():
                    what = (
                        f"a tensor of shape {tuple(value.shape)}"
                        if isinstance(value, torch.Tensor)
                        else f"a {type(value).__name__}"
                    )
                    raise PlanError(
                        f"dims[{dim.__name__!r}] declares axis {axis} of input {arg!r} dynamic, "
                        f"but {arg!r} is {what}",
                        path=path,
                        strategy="export",
                    )
                out[(index, axis % value.dim())] = dim
    return out


def _unknown_input(dim_name: str, arg: str, leaves: list[Leaf]) -> str:
    names = [leaf.name for leaf in leaves]
    inside = [name for name in names if name.startswith(f"{arg}[")]
    if inside:  # a dict, list or tuple argument: its tensors have names of their own
        return (
            f"dims[{dim_name!r}] names input {arg!r}, which holds several inputs: name a tensor "
            f"inside it ({', '.join(inside)})"
        )
    return (
        f"dims[{dim_name!r}] names input {arg!r}, which the root's forward does not take "
        f"(its inputs: {', '.join(names) or 'none'}; a forward(*args) takes args[0], args[1], ...; "
        "keyword-only and **kwargs arguments get no example values)"
    )


def inferred_axes(calls: list[list[Leaf]]) -> list[Axis]:
    """The tensor axes whose size differs between the calls (same rank in every call)."""
    if len(calls) < 2 or len({len(leaves) for leaves in calls}) != 1:
        return []
    out = []
    for index, leaf in enumerate(calls[0]):
        values = [leaves[index].value for leaves in calls]
        if not all(isinstance(v, torch.Tensor) and v.dim() == leaf.value.dim() for v in values):
            continue
        out += [(index, axis) for axis in range(leaf.value.dim()) if len({v.shape[axis] for v in values}) > 1]
    return out


def size_problems(
    leaves: list[Leaf], dynamic: Sequence[Axis], sizes_elsewhere: Mapping[Axis, Any]
) -> list[str]:
    """What in this call makes torch (or ``make_fx``) fix a dynamic axis, one phrase each.

    Sizes 0 and 1 are specialised by torch; a size equal to a fixed axis of the same
    call (3 atoms and xyz = 3), or to another dynamic axis that differs from it in some
    other call, is taken for the same dimension by ``make_fx``'s symbolic tracing.

    :param sizes_elsewhere: per dynamic axis, its sizes in every call (a tuple), to tell
        axes that are really equal from ones that only coincide here.
    """
    size_of = {(i, axis): leaves[i].value.shape[axis] for i, axis in dynamic}
    fixed = {
        leaf.value.shape[axis]: leaf.axis_name(axis)
        for i, leaf in enumerate(leaves)
        if isinstance(leaf.value, torch.Tensor)
        for axis in range(leaf.value.dim())
        if (i, axis) not in size_of
    }
    problems = []
    for (i, axis), size in size_of.items():
        name = leaves[i].axis_name(axis)
        if size in (0, 1):
            problems.append(f"{name} has size {size}, which torch specialises")
        elif size in fixed:
            problems.append(f"{name} has size {size}, like the fixed axis {fixed[size]}")
    seen: dict[int, Axis] = {}
    for key, size in size_of.items():
        other = seen.setdefault(size, key)
        if other != key and sizes_elsewhere.get(other) != sizes_elsewhere.get(key):
            first, second = (leaves[a].axis_name(b) for a, b in (other, key))
            problems.append(f"{second} has size {size} like {first}, a different dim")
    return problems


def export_spec(
    target: torch.nn.Module, args: tuple[Any, ...], dims: Mapping[Axis, Any]
) -> dict[str, Any] | tuple[Any, ...] | None:
    """torch.export's ``dynamic_shapes`` for ``target(*args)``: ``dims`` per leaf axis, by argument.

    Built on the flattened leaves, then put back into the arguments' structure and bound
    to ``target``'s own signature (the user's ``forward``, or a ``make_fx`` graph's
    ``arg0, arg1``); without a readable signature, a tuple matching ``args``.
    """
    if not dims:
        return None
    flat, structure = pytree.tree_flatten(args)
    per_leaf: list[Any] = [None] * len(flat)
    for (index, axis), dim in dims.items():
        per_leaf[index] = {**(per_leaf[index] or {}), axis: dim}
    structured = pytree.tree_unflatten(per_leaf, structure)
    try:
        return dict(inspect.signature(target.forward).bind(*structured).arguments)
    except (TypeError, ValueError):
        return tuple(structured)


def describe_dims(
    program: torch.export.ExportedProgram, leaves: list[Leaf], names: Mapping[Axis, str]
) -> str:
    """The program's dynamic dims for the plan: ``s0 = pos[0] = species[0]; edges = edge_index[1]``.

    Axes torch proved equal share a symbol and are listed together, under the user's
    dim name when ``dims`` named one of them (``names``), else as ``s0``, ``s1``, ...
    A bounded range (a ``max``, or a ``min`` above 2) follows in brackets.
    """
    users = set(program.graph_signature.user_inputs)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in users]
    groups: dict[Any, list[str]] = {}
    labels: dict[Any, str] = {}
    for index, (node, leaf) in enumerate(zip(placeholders, leaves)):
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            continue
        for axis, size in enumerate(value.shape):
            if isinstance(size, torch.SymInt):
                expr = size.node.expr
                groups.setdefault(expr, []).append(leaf.axis_name(axis))
                if (index, axis) in names:
                    labels[expr] = names[(index, axis)]
    parts = []
    unnamed = 0
    for expr, axes in groups.items():
        label = labels.get(expr)
        if label is None:
            label, unnamed = (f"s{unnamed}", unnamed + 1) if expr.is_symbol else (str(expr), unnamed)
        bounds = program.range_constraints.get(expr)
        extra = ""
        if bounds is not None and (bounds.lower > 2 or bounds.upper != int_oo):
            extra = f" [{bounds.lower}, {bounds.upper}]"
        parts.append(" = ".join([label, *axes]) + extra)
    return "; ".join(parts)
