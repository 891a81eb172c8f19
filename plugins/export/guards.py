"""What an exported program takes, and a cheap check of each call against it.

torch's own checks of a call to an exported program end in a bare
``AssertionError: Guard failed: ...`` (or, in an AOTInductor package, in no check
at all: a size past a bound runs, and a changed ``int`` input is ignored).
:class:`InputSpec` reads what the program was built for from the program itself
(the placeholders' ``meta['val']``, ``range_constraints``, the call's ``in_spec``
and ``forward``'s argument names) and raises an :class:`~torchstitch.InputSpecError`
naming the input (``data['pos']``), the dimension, the size given and the range
the export allows. It travels as JSON in an AOTInductor package's metadata.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch.utils import _pytree as pytree

from torchstitch import InputSpecError

__all__ = ["InputSpec", "TensorLeaf", "ConstantLeaf"]

log = logging.getLogger(__name__)

#: sizes torch lets through whatever the lower bound says (it exports 0 and 1 as 2)
_RUNTIME_MIN = 2


@attrs.frozen
class TensorLeaf:
    """A tensor input: its dtype, device and, per axis, a fixed size or a symbol."""

    #: forward's argument name and pytree path, as messages show it (``data['pos']``)
    path: str
    dtype: torch.dtype
    device: torch.device
    #: per axis: ``int`` a fixed size; ``str`` a symbol of the ranges (``"s44"``) or an
    #: expression of them (``"2*s44"``)
    shape: tuple[int | str, ...]


@attrs.frozen
class ConstantLeaf:
    """A non-tensor input: the program was specialised to its value (``None``: not checked)."""

    path: str
    value: int | float | str | bool | None


Leaf = TensorLeaf | ConstantLeaf


@attrs.frozen
class InputSpec:
    """The inputs an exported program takes.

    :param in_spec: the pytree structure of ``(args, kwargs)`` the program was exported with.
    :param names: ``forward``'s argument names, for messages.
    :param leaves: one per leaf of ``in_spec``, in order.
    :param ranges: ``{symbol: (lower, upper)}`` of every dynamic size; ``upper`` is
        ``None`` when unbounded.
    :param where: the node's path, for the errors (``""``: the root).
    """

    in_spec: pytree.TreeSpec = attrs.field(eq=False)
    names: tuple[str, ...]
    leaves: tuple[Leaf, ...]
    ranges: Mapping[str, tuple[int, int | None]]
    where: str = ""
    #: the checks of a call that fits, precomputed (``None``: every call takes the full check)
    _fast: _FastCheck | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_fast", _FastCheck.build(self))

    # -- building -------------------------------------------------------------

    @classmethod
    def from_program(
        cls, program: torch.export.ExportedProgram, *, names: Sequence[str] | None = None, where: str = ""
    ) -> InputSpec:
        """Read the spec from ``program``.

        :param names: ``forward``'s argument names when the program's own are not the
            user's (a ``make_fx`` graph takes ``arg0_1, ...``); ignored when fewer than
            the positional arguments the program was exported with.
        """
        in_spec = program.call_spec.in_spec
        own = program.module_call_graph[0].signature
        arg_names = _argument_names(in_spec, names, own.forward_arg_names if own else None)
        paths = _leaf_paths(in_spec, arg_names)
        values = [_placeholder_value(node) for node in user_placeholders(program)]
        if len(values) != len(paths):
            raise ValueError(f"the program has {len(values)} user inputs but its in_spec {len(paths)} leaves")
        leaves = tuple(_leaf(path, value) for path, value in zip(paths, values))
        ranges = {str(symbol): _bounds(vr) for symbol, vr in program.range_constraints.items()}
        return cls(in_spec, tuple(arg_names), leaves, ranges, where)

    def to_json(self) -> str:
        """The spec as JSON (the structure is not included: a package keeps its own)."""
        leaves = [
            {
                "path": leaf.path,
                "dtype": str(leaf.dtype).removeprefix("torch."),
                "device": str(leaf.device),
                "shape": list(leaf.shape),
            }
            if isinstance(leaf, TensorLeaf)
            else {"path": leaf.path, "value": leaf.value}
            for leaf in self.leaves
        ]
        ranges = {symbol: list(bounds) for symbol, bounds in self.ranges.items()}
        return json.dumps({"names": list(self.names), "leaves": leaves, "ranges": ranges}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, in_spec: pytree.TreeSpec, *, where: str = "") -> InputSpec:
        """The spec :meth:`to_json` wrote, with the structure ``in_spec``."""
        data = json.loads(text)
        leaves = tuple(
            TensorLeaf(
                leaf["path"],
                getattr(torch, leaf["dtype"]),
                torch.device(leaf["device"]),
                tuple(leaf["shape"]),
            )
            if "dtype" in leaf
            else ConstantLeaf(leaf["path"], leaf["value"])
            for leaf in data["leaves"]
        )
        if len(leaves) != in_spec.num_leaves:
            raise ValueError(
                f"the input spec has {len(leaves)} leaves, the package's structure {in_spec.num_leaves}"
            )
        ranges = {symbol: (lower, upper) for symbol, (lower, upper) in data["ranges"].items()}
        return cls(in_spec, tuple(data["names"]), leaves, ranges, where)

    # -- checking -------------------------------------------------------------

    def check(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], list[Any]]:
        """Check a call against the spec.

        Arguments the program took by position may be given by name.

        :returns: the call's ``args`` and ``kwargs`` in the form the program was
            exported with, and their leaves.
        :raises InputSpecError: naming the first input that does not fit.
        """
        if self._fast is not None:
            flat = self._fast.flat_if_fits(args, kwargs)
            if flat is not None:
                return args, dict(kwargs), flat
        # the full check: it binds arguments given by name, and says what does not fit
        args, kwargs = self._bind(args, kwargs)
        flat, structure = pytree.tree_flatten((args, kwargs))
        if structure != self.in_spec:
            raise self._error(*_structure_problem(self, args, kwargs))
        sizes: dict[str, tuple[int, str]] = {}
        deferred: list[tuple[str, int, str, int]] = []
        for leaf, value in zip(self.leaves, flat):
            if isinstance(leaf, TensorLeaf):
                self._check_tensor(leaf, value, sizes, deferred)
            elif leaf.value is not None and not _same_constant(value, leaf.value):
                raise self._error(
                    f"input {leaf.path} is {value!r}, but the export fixed it to {leaf.value!r}", leaf.path
                )
        for path, axis, expression, actual in deferred:
            self._check_expression(path, axis, expression, actual, sizes)
        return args, kwargs, flat

    def _bind(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` in the form the program was exported with: arguments it took by
        position moved out of ``kwargs``, keyword arguments in its order."""
        if not kwargs:
            return args, {}
        exported_kwargs = list(_child(self.in_spec, 1).context or ())
        kwargs = dict(kwargs)
        positional = list(args)
        for name in self.names[len(args) : _child(self.in_spec, 0).num_children]:
            if name not in kwargs:
                break
            positional.append(kwargs.pop(name))
        if set(kwargs) == set(exported_kwargs):
            kwargs = {name: kwargs[name] for name in exported_kwargs}
        return tuple(positional), kwargs

    def _check_tensor(
        self, leaf: TensorLeaf, value: Any, sizes: dict[str, tuple[int, str]], deferred: list
    ) -> None:
        if not isinstance(value, torch.Tensor):
            raise self._error(
                f"input {leaf.path} is a {type(value).__name__}, but the export takes a tensor "
                f"({_describe_tensor(leaf)})",
                leaf.path,
            )
        if value.dtype != leaf.dtype:
            raise self._error(
                f"input {leaf.path} is {_dtype_name(value.dtype)}, but the export takes "
                f"{_dtype_name(leaf.dtype)}",
                leaf.path,
            )
        if value.device != leaf.device:
            raise self._error(
                f"input {leaf.path} is on {value.device}, but the export runs on {leaf.device}", leaf.path
            )
        shape = value.shape
        if len(shape) != len(leaf.shape):
            raise self._error(
                f"input {leaf.path} has {len(shape)} dims (shape {list(shape)}), but the export takes "
                f"{len(leaf.shape)} ({_describe_tensor(leaf)})",
                leaf.path,
            )
        for axis, (expected, actual) in enumerate(zip(leaf.shape, shape)):
            if not isinstance(actual, int) or expected == actual:  # a SymInt: traced, not called
                continue
            if isinstance(expected, int):
                raise self._error(
                    f"input {leaf.path} dim {axis} is {actual}, but the export fixed it to {expected} "
                    "(declare the dim dynamic when compiling: the export option 'dims')",
                    leaf.path,
                )
            if expected not in self.ranges:
                deferred.append((leaf.path, axis, expected, actual))
                continue
            self._check_symbol(leaf.path, axis, expected, actual, sizes)

    def _check_symbol(
        self, path: str, axis: int, symbol: str, actual: int, sizes: dict[str, tuple[int, str]]
    ) -> None:
        where = f"{path} dim {axis}"
        seen = sizes.get(symbol)
        if seen is not None:
            if seen[0] != actual:
                raise self._error(
                    f"input {where} is {actual}, but {seen[1]} is {seen[0]}: the export made them one size",
                    path,
                )
            return
        sizes[symbol] = (actual, where)
        lower, upper = self.ranges[symbol]
        if (lower > _RUNTIME_MIN and actual < lower) or (upper is not None and actual > upper):
            raise self._error(
                f"input {where} is {actual}, outside the range {_render_range(lower, upper)} it was "
                "exported for",
                path,
            )

    def _check_expression(
        self, path: str, axis: int, expression: str, actual: int, sizes: dict[str, tuple[int, str]]
    ) -> None:
        """A size the export derived from others (``2*s44``): checked once they are known."""
        import sympy  # type: ignore[import-untyped]  # torch's dependency, without stubs

        expr = sympy.sympify(expression)
        known = {symbol: sizes[str(symbol)][0] for symbol in expr.free_symbols if str(symbol) in sizes}
        if len(known) != len(expr.free_symbols):
            return  # its own symbol: torch solves for it when the graph runs
        expected = int(expr.subs(known))
        if expected != actual:
            others = ", ".join(sizes[str(symbol)][1] for symbol in expr.free_symbols)
            raise self._error(
                f"input {path} dim {axis} is {actual}, but the export derived it from {others} as "
                f"{expression} = {expected}",
                path,
            )

    def guard_failure(self, exc: AssertionError) -> InputSpecError | None:
        """torch's ``Guard failed: ...`` (a relation between inputs the export assumed) as an
        :class:`~torchstitch.InputSpecError`; ``None`` for any other assertion."""
        text = str(exc).strip()
        if not text.startswith("Guard failed"):
            return None
        guard = text.partition(":")[2].strip()
        return self._error(
            f"the inputs break a condition the export assumed between input sizes: {guard} "
            f"({_args_text(self.names)})"
        )

    def _error(self, message: str, input: str | None = None) -> InputSpecError:
        return InputSpecError(message, input=input, path=self.where, strategy="export")


# -- the fast path ---------------------------------------------------------------


#: takes the leaves of one argument into a list; ``False`` where its structure differs
_Taker = Callable[[Any, list[Any]], bool]


@attrs.frozen
class _FastCheck:
    """:meth:`InputSpec.check` of a call that fits, in one pass without allocating much: a
    loaded AOTI package checks every call, and the full check (pytree flatten, structure
    comparison, per-leaf messages ready) costs as much as a tenth of a small model's run.

    It only answers whether the call fits; where it does not, or where it cannot tell
    (a size the export derived from others, an input it did not record), the full check
    runs and says why.
    """

    take: _Taker
    #: per tensor input: (leaf index, dtype, device, number of dims, fixed (axis, size)
    #: pairs, dynamic (axis, symbol) pairs)
    tensors: tuple[tuple[int, torch.dtype, torch.device, int, tuple, tuple], ...]
    #: per constant input: (leaf index, the value the export fixed)
    constants: tuple[tuple[int, Any], ...]
    #: per symbol: the sizes it may take, ``(lower, upper)`` both inclusive
    bounds: Mapping[str, tuple[int, float]]

    @classmethod
    def build(cls, spec: InputSpec) -> _FastCheck | None:
        """The fast check of ``spec``; ``None`` where it has something only the full check handles."""
        take = _taker(spec.in_spec)
        if take is None:
            return None
        tensors, constants = [], []
        for index, leaf in enumerate(spec.leaves):
            if isinstance(leaf, ConstantLeaf):
                if leaf.value is None:
                    return None  # a SymInt or an opaque input: only the full check skips it
                constants.append((index, leaf.value))
                continue
            if any(isinstance(size, str) and size not in spec.ranges for size in leaf.shape):
                return None  # a derived size (2*s44): checked once the others are known
            fixed = tuple((axis, size) for axis, size in enumerate(leaf.shape) if isinstance(size, int))
            symbols = tuple((axis, size) for axis, size in enumerate(leaf.shape) if isinstance(size, str))
            tensors.append((index, leaf.dtype, leaf.device, len(leaf.shape), fixed, symbols))
        bounds = {
            symbol: (lower if lower > _RUNTIME_MIN else 0, math.inf if upper is None else upper)
            for symbol, (lower, upper) in spec.ranges.items()
        }
        return cls(take, tuple(tensors), tuple(constants), bounds)

    def flat_if_fits(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Any] | None:
        """The call's leaves if it fits, else ``None``."""
        flat: list[Any] = []
        if not self.take((args, kwargs), flat):
            return None
        sizes: dict[str, int] = {}
        for index, dtype, device, ndim, fixed, symbols in self.tensors:
            value = flat[index]
            if not isinstance(value, torch.Tensor) or value.dtype != dtype or value.device != device:
                return None
            shape = value.shape
            if len(shape) != ndim:
                return None
            for axis, size in fixed:
                actual = shape[axis]
                # a SymInt (the call is traced) is never compared: that would add a guard
                if type(actual) is not int or actual != size:
                    return None
            for axis, symbol in symbols:
                actual = shape[axis]
                if type(actual) is not int or sizes.setdefault(symbol, actual) != actual:
                    return None
        for symbol, actual in sizes.items():
            lower, upper = self.bounds[symbol]
            if not lower <= actual <= upper:
                return None
        for index, value in self.constants:
            if not _same_constant(flat[index], value):
                return None
        return flat


def _taker(spec: pytree.TreeSpec) -> _Taker | None:
    """What takes the leaves of a value of structure ``spec`` (tuples, lists and dicts, the
    order of pytree's flatten), checking the structure on the way; ``None`` for other nodes."""
    if spec.is_leaf():
        return _take_leaf
    found = [_taker(child) for child in _children_of(spec)]
    children = [child for child in found if child is not None]
    if len(children) != len(found):
        return None
    leaves_only = all(child is _take_leaf for child in children)
    kind, count = spec.type, spec.num_children
    if kind is dict:
        keys = tuple(spec.context)

        def take_dict(value: Any, flat: list[Any]) -> bool:
            if type(value) is not dict or tuple(value) != keys:
                return False
            if leaves_only:
                flat.extend(value.values())
                return True
            return _take_all(children, value.values(), flat)

        return take_dict
    if kind in (tuple, list):

        def take_sequence(value: Any, flat: list[Any]) -> bool:
            if type(value) is not kind or len(value) != count:
                return False
            if leaves_only:
                flat.extend(value)
                return True
            return _take_all(children, value, flat)

        return take_sequence
    return None


def _take_leaf(value: Any, flat: list[Any]) -> bool:
    # whatever it is: a dict where the export took a tensor fails the tensor's own check
    flat.append(value)
    return True


def _take_all(children: list[_Taker], values: Any, flat: list[Any]) -> bool:
    return all(take(value, flat) for take, value in zip(children, values))


# -- reading the program --------------------------------------------------------


def user_placeholders(program: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """The placeholders of the caller's inputs, one per leaf of the program's ``in_spec``.

    Read from ``input_specs`` (in the order of the placeholders), not ``user_inputs``:
    that names a constant input (``compute_virials=True``) by its value, not its node.
    """
    from torch.export.graph_signature import InputKind

    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    specs = program.graph_signature.input_specs
    return [node for node, spec in zip(placeholders, specs) if spec.kind == InputKind.USER_INPUT]


def _placeholder_value(node: torch.fx.Node) -> Any:
    return node.meta.get("val")


def _child(spec: pytree.TreeSpec, index: int) -> pytree.TreeSpec:
    return spec.child(index) if hasattr(spec, "child") else spec.children_specs[index]


def _children_of(spec: pytree.TreeSpec) -> list[pytree.TreeSpec]:
    # ``children_specs`` is deprecated from torch 2.13 on, ``children()`` new in it
    return list(spec.children()) if hasattr(spec, "children") else spec.children_specs


def _argument_names(
    in_spec: pytree.TreeSpec, names: Sequence[str] | None, own: Sequence[str] | None
) -> list[str]:
    """A name per positional argument (the given ``names``, else the program's own, else
    ``args[i]``), then the keyword arguments' names."""
    n_args = _child(in_spec, 0).num_children
    for candidate in (names, own):
        if candidate is not None and len(candidate) >= n_args:
            chosen = list(candidate[:n_args])
            break
    else:
        chosen = [f"args[{i}]" for i in range(n_args)]
    return chosen + list(_child(in_spec, 1).context or ())


def _leaf_paths(in_spec: pytree.TreeSpec, names: Sequence[str]) -> list[str]:
    """Each leaf's path as messages show it: ``data['pos']``, ``scale``, ``args[2][0]``."""
    numbered = pytree.tree_unflatten(list(range(in_spec.num_leaves)), in_spec)
    flat, _ = pytree.tree_flatten_with_path(numbered)
    return [_render_path(key_path, names) for key_path, _ in flat]


def _render_path(key_path: tuple[Any, ...], names: Sequence[str]) -> str:
    """``(SequenceKey(0), SequenceKey(1), MappingKey('pos'))`` -> ``data['pos']`` for names ``(x, data)``."""
    kind, argument, *rest = key_path
    if kind.idx == 0:
        name = names[argument.idx] if argument.idx < len(names) else f"args[{argument.idx}]"
    else:
        name = str(argument.key)
    return name + pytree.keystr(tuple(rest))


def _leaf(path: str, value: Any) -> Leaf:
    if isinstance(value, torch.Tensor):
        shape = tuple(_size(size) for size in value.shape)
        return TensorLeaf(path, value.dtype, value.device, shape)
    if isinstance(value, (bool, int, float, str)) and not isinstance(value, torch.SymInt):
        return ConstantLeaf(path, value)
    return ConstantLeaf(path, None)  # a SymInt input, an opaque object: torch checks it


def _size(size: int | torch.SymInt) -> int | str:
    if isinstance(size, int):
        return size
    expr = size.node.expr
    return int(expr) if expr.is_number else str(expr)


def _bounds(value_range: Any) -> tuple[int, int | None]:
    lower, upper = value_range.lower, value_range.upper
    lower = 0 if not _finite(lower) else int(lower)
    return lower, int(upper) if _finite(upper) else None


def _finite(bound: Any) -> bool:
    try:
        return math.isfinite(float(bound))
    except (TypeError, ValueError, OverflowError):
        return False


# -- messages -------------------------------------------------------------------


def _same_constant(value: Any, expected: Any) -> bool:
    if type(value) is not type(expected):
        return False
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(value)
    return value == expected


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _render_range(lower: int, upper: int | None) -> str:
    return f"[{lower}, {'inf' if upper is None else upper}]"


def _describe_tensor(leaf: TensorLeaf) -> str:
    shape = ", ".join(str(size) for size in leaf.shape)
    return f"{_dtype_name(leaf.dtype)} [{shape}] on {leaf.device}"


def _args_text(names: Sequence[str]) -> str:
    return f"forward({', '.join(names)})"


def _describe(tree: Any) -> str:
    """What a call gave for one argument, in a few words (``a dict with keys ['pos']``)."""
    if isinstance(tree, Mapping):
        return f"a {type(tree).__name__} with keys {sorted(map(str, tree))}"
    if isinstance(tree, (tuple, list)):
        return f"a {type(tree).__name__} of {len(tree)}"
    if isinstance(tree, torch.Tensor):
        return "a tensor"
    return f"a {type(tree).__name__}"


def _describe_spec(spec: pytree.TreeSpec) -> str:
    if spec.is_leaf():
        return "a tensor or value"
    if spec.type is dict or (isinstance(spec.type, type) and issubclass(spec.type, Mapping)):
        return f"a {spec.type.__name__} with keys {sorted(map(str, spec.context))}"
    if spec.type in (tuple, list):
        return f"a {spec.type.__name__} of {spec.num_children}"
    return f"a {getattr(spec.type, '__name__', spec.type)}"


def _structure_problem(
    spec: InputSpec, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[str, str | None]:
    """Why ``(args, kwargs)`` does not have the structure the program was exported with,
    and the input at fault (``None``: the call as a whole)."""
    exported_args, exported_kwargs = _child(spec.in_spec, 0), _child(spec.in_spec, 1)
    n_args = exported_args.num_children
    if len(args) != n_args:
        message = (
            f"{_args_text(spec.names[:n_args])} was exported with {n_args} positional inputs, got {len(args)}"
        )
        return message, None
    expected_kwargs = list(exported_kwargs.context or ())
    if set(kwargs) != set(expected_kwargs):
        missing = sorted(set(expected_kwargs) - set(kwargs))
        extra = sorted(set(kwargs) - set(expected_kwargs))
        message = (
            "keyword inputs do not fit the export "
            f"(missing: {missing or 'none'}, unexpected: {extra or 'none'})"
        )
        return message, None
    given = [*args, *(kwargs[name] for name in expected_kwargs)]
    expected = [
        *(_child(exported_args, i) for i in range(n_args)),
        *(_child(exported_kwargs, i) for i in range(len(expected_kwargs))),
    ]
    for name, value, structure in zip(spec.names, given, expected):
        problem = _difference(value, structure, name)
        if problem is not None:
            return problem
    return "the inputs' structure differs from the one the program was exported with", None


def _difference(value: Any, structure: pytree.TreeSpec, path: str) -> tuple[str, str] | None:
    """The deepest place where ``value`` departs from ``structure``: a sentence, and that path."""
    if pytree.tree_structure(value) == structure:
        return None
    if structure.type is dict and isinstance(value, dict) and set(value) == set(structure.context):
        parts = [(value[key], f"{path}[{key!r}]") for key in structure.context]
    elif (
        structure.type in (tuple, list)
        and type(value) is structure.type
        and len(value) == structure.num_children
    ):
        parts = [(item, f"{path}[{i}]") for i, item in enumerate(value)]
    else:
        return f"input {path} is {_describe(value)}, but the export takes {_describe_spec(structure)}", path
    for i, (item, where) in enumerate(parts):
        problem = _difference(item, _child(structure, i), where)
        if problem is not None:
            return problem
    if structure.type is dict and list(value) != list(structure.context):
        # not put in order here: a model that reads the dict in order would then see another
        # order than the caller gave, and differ from eager without a word
        return (
            f"input {path} has the keys the export took, in another order: "
            f"{list(map(str, value))}; the export fixed their order as "
            f"{list(map(str, structure.context))} (a dict's order is part of its structure, since "
            "a model may read it in order): pass the keys in that order",
            path,
        )
    return None
