"""Tracing inputs: normalising what callers give, and recording what an eager run sees."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch.utils._pytree import keystr, tree_flatten, tree_flatten_with_path, tree_map_only

from .errors import TracingInputsError, exception_summary
from .strategy import TracingInputs

__all__ = [
    "as_example_args",
    "as_example_sets",
    "check_example_sets",
    "normalize_tracing_inputs",
    "check_tracing_inputs",
    "Recording",
    "record",
    "snapshot",
    "to_module",
    "call_for_values",
    "cast_tensors",
]

log = logging.getLogger(__name__)


# Nested inputs and outputs are pytrees: torch's own flattening (tuples, lists, dicts,
# NamedTuples, OrderedDicts, ... and whatever a library registers) walks them here.


def snapshot(value: Any) -> Any:
    """A copy of ``value`` whose tensors are detached clones (containers rebuilt, rest shared)."""
    return tree_map_only(torch.Tensor, lambda tensor: tensor.detach().clone(), value)


def to_module(value: Any, module: torch.nn.Module) -> Any:
    """``value`` with tensors moved to ``module``'s device and floating tensors cast to its
    floating dtype (what e3nn does with ``_make_tracing_inputs`` results).

    The device and dtype are those of the module's first parameter or buffer
    (the first floating one for the dtype); a module without tensors changes nothing.
    """
    device = dtype = None
    for tensor in _tensors_of(module):
        device = device or tensor.device
        if dtype is None and tensor.is_floating_point():
            dtype = tensor.dtype
        if device is not None and dtype is not None:
            break
    if device is None:
        return value
    return cast_tensors(value, device, dtype)


def _tensors_of(module: torch.nn.Module):
    yield from module.parameters()
    yield from module.buffers()


def cast_tensors(value: Any, device: torch.device | str, dtype: torch.dtype | None) -> Any:
    """``value`` with its tensors on ``device`` and its floating tensors in ``dtype``
    (``None``: keep each tensor's dtype); containers are rebuilt."""

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            return tensor.to(device=device, dtype=dtype)
        return tensor.to(device=device)

    return tree_map_only(torch.Tensor, cast, value)


def call_for_values(fn: Any, args: tuple[Any, ...]) -> Any:
    """``fn(*snapshot(args))`` without building an autograd graph, where possible.

    Recording and verification need output values only, and a large model's
    autograd graph costs far more memory than its weights.  A forward that needs
    autograd itself (forces from ``torch.autograd.grad``) fails under
    ``no_grad``; it is run again as the caller would run it.
    """
    try:
        with torch.no_grad():
            return fn(*snapshot(args))
    except Exception:
        if not torch.is_grad_enabled():
            raise
        log.debug("forward failed under torch.no_grad(); running it with autograd", exc_info=True)
        return fn(*snapshot(args))


def same_inputs(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same call's arguments: the same containers (dict keys
    in the same order) holding equal values, tensors equal by ``torch.equal`` with the same
    shape, dtype and device."""
    leaves_a, structure_a = tree_flatten(a)
    leaves_b, structure_b = tree_flatten(b)
    return structure_a == structure_b and all(map(_same_leaf, leaves_a, leaves_b))


def _same_leaf(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.device == b.device
            and torch.equal(a, b)
        )
    try:
        return bool(a == b)
    except Exception:
        return a is b


def as_example_args(example_inputs: Any) -> tuple[Any, ...] | None:
    """The caller's ``example_inputs`` as positional arguments of the root's ``forward``."""
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(
        "example_inputs must be a tuple of positional arguments for the root's forward "
        "(or a single tensor), or a list of such tuples (several input sets), "
        f"got {type(example_inputs).__name__}"
    )


def as_example_sets(example_inputs: Any) -> list[tuple[Any, ...]] | None:
    """The caller's ``example_inputs`` as a list of input sets, each the positional
    arguments of the root's ``forward``.

    A list whose every item is a tuple is several sets (``[(pos6, z6), (pos9, z9)]``);
    anything else is one set, read by :func:`as_example_args` (a tuple, a list of
    arguments, or a single tensor).  One set whose arguments are themselves tuples is
    given as a tuple: ``((a, b), (c, d))``.
    """
    if (
        isinstance(example_inputs, list)
        and example_inputs
        and all(isinstance(s, tuple) for s in example_inputs)
    ):
        return list(example_inputs)
    args = as_example_args(example_inputs)
    return None if args is None else [args]


def check_example_sets(root: torch.nn.Module, sets: list[tuple[Any, ...]], given: Any = None) -> None:
    """Refuse input sets that do not call the root's ``forward``, or that are not calls of
    the same ``forward``: a different argument count, nesting, leaf type, dtype or number
    of dimensions than the first set.

    :param given: the caller's ``example_inputs`` as given, for the hint on a plain list.
    :raises TracingInputsError: naming the set and the argument (by ``forward``'s name).
    """
    for number, args in enumerate(sets, start=1):
        try:
            inspect.signature(root.forward).bind(*args)
        except TypeError as exc:
            label = "example_inputs" if len(sets) == 1 else f"example_inputs set {number} (of {len(sets)})"
            hint = ""
            if isinstance(given, list) and len(sets) == 1:
                hint = (
                    "; a list is one set of arguments unless every item is a tuple: give "
                    "several input sets as [(x6,), (x9,)]"
                )
            raise TracingInputsError(
                f"{label} ({len(args)} positional argument(s)) do not fit "
                f"{type(root).__name__}.forward{inspect.signature(root.forward)}: {exc}{hint}",
                path="",
            ) from exc
    if len(sets) < 2:
        return
    names = _argument_names(root)
    first = sets[0]
    for number, other in enumerate(sets[1:], start=2):
        if len(other) != len(first):
            raise _set_error(number, len(sets), f"has {len(other)} argument(s) where set 1 has {len(first)}")
        for index, (a, b) in enumerate(zip(first, other)):
            name = names[index] if index < len(names) else f"args[{index}]"
            problem = _structure_difference(a, b)
            if problem is not None:
                raise _set_error(number, len(sets), f"argument {name!r}{problem}")


def _set_error(number: int, total: int, problem: str) -> TracingInputsError:
    return TracingInputsError(
        f"example_inputs set {number} (of {total}) {problem}: every set must call forward the same "
        "way, only sizes may differ",
        path="",
    )


def _argument_names(module: torch.nn.Module) -> list[str]:
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _structure_difference(a: Any, b: Any) -> str | None:
    """How ``b`` is not shaped like ``a`` (``None``: only sizes and values differ)."""
    leaves_a, spec_a = tree_flatten_with_path(a)
    leaves_b, spec_b = tree_flatten_with_path(b)
    if spec_a != spec_b:
        return f" is nested differently than in set 1 ({_describe_nesting(a)} vs {_describe_nesting(b)})"
    for (key, x), (_, y) in zip(leaves_a, leaves_b):
        where = keystr(key)
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor) or (
            not isinstance(x, torch.Tensor) and type(x) is not type(y)
        ):
            return f"{where} is a {type(y).__name__} where set 1 has a {type(x).__name__}"
        if isinstance(x, torch.Tensor):
            if x.dtype != y.dtype:
                return f"{where} has dtype {y.dtype} where set 1 has {x.dtype}"
            if x.dim() != y.dim():
                return f"{where} has {y.dim()} dimension(s) where set 1 has {x.dim()}"
    return None


def _describe_nesting(value: Any) -> str:
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def normalize_tracing_inputs(value: Any, path: str) -> TracingInputs:
    """Accept ``args``, ``{method: args}`` or a list of either; return ``[{method: args}, ...]``."""
    if isinstance(value, (torch.Tensor, tuple, dict)):
        value = [value]
    if not isinstance(value, list):
        raise TracingInputsError(
            "inputs= values must be an args tuple, a {method: args} dict or a list of them, "
            f"got {type(value).__name__}",
            path=path,
        )
    out: TracingInputs = []
    for item in value:
        if isinstance(item, torch.Tensor):
            item = (item,)
        if isinstance(item, tuple):
            item = {"forward": item}
        out.append(item)
    return out


def check_tracing_inputs(module: torch.nn.Module, inputs: Any, *, path: str, provider: str) -> TracingInputs:
    """Validate a provider's answer: a non-empty list of ``{method_name: args_tuple}`` dicts."""

    def fail(problem: str) -> TracingInputsError:
        return TracingInputsError(
            f"tracing inputs from {provider!r} are malformed: {problem}; expected a non-empty "
            "list of {method_name: args_tuple} dicts",
            path=path,
        )

    if not isinstance(inputs, list):
        raise fail(f"got a {type(inputs).__name__}, not a list")
    if not inputs:
        raise fail("got an empty list")
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or not item:
            raise fail(f"item {i} is {type(item).__name__}, not a non-empty dict")
        for method, args in item.items():
            if not isinstance(method, str):
                raise fail(f"item {i} has a non-string key {method!r}")
            if not isinstance(args, tuple):
                raise fail(f"item {i}[{method!r}] is a {type(args).__name__}, not a tuple")
            if not callable(getattr(type(module), method, None)):
                raise fail(f"item {i} names method {method!r}, which {type(module).__name__} lacks")
    return inputs


def bind_positional(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple | None:
    """``args`` with ``kwargs`` folded in by ``forward``'s signature; ``None`` if impossible."""
    if not kwargs:
        return args
    try:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return None if bound.kwargs else tuple(bound.args)


@attrs.frozen
class Recording:
    """What the eager runs of the root on ``example_inputs`` (one per input set) saw."""

    #: the root's output on each input set (snapshots)
    root_outputs: list[Any] = attrs.field(eq=False, repr=False)
    #: path -> distinct calls seen, as tracing inputs (``{"forward": args}``)
    inputs: dict[str, TracingInputs] = attrs.field(eq=False, repr=False)
    #: path -> the eager outputs matching ``inputs`` one for one
    outputs: dict[str, list[Any]] = attrs.field(eq=False, repr=False)

    @classmethod
    def merge(cls, recordings: list[Recording]) -> Recording:
        """Runs on several input sets as one: their root outputs in order, and every path's
        calls those of every run, in run order (a node traced on them sees each set)."""
        inputs: dict[str, TracingInputs] = {}
        outputs: dict[str, list[Any]] = {}
        for recording in recordings:
            for path, calls in recording.inputs.items():
                seen = inputs.setdefault(path, [])
                for call, output in zip(calls, recording.outputs[path]):
                    if not any(same_inputs(call["forward"], s["forward"]) for s in seen):
                        seen.append(call)
                        outputs.setdefault(path, []).append(output)
        return cls([out for r in recordings for out in r.root_outputs], inputs, outputs)


def record(
    root: torch.nn.Module,
    args: tuple[Any, ...],
    targets: Mapping[str, torch.nn.Module],
    *,
    limit: int,
    modules: Mapping[str, torch.nn.Module],
    label: str = "example_inputs",
) -> Recording:
    """Run ``root(*args)`` once, recording up to ``limit`` distinct calls of each target.

    Hooks are attached to the target modules for the duration of the run and
    removed in ``finally``.  If the run raises, the error names the deepest
    module whose ``forward`` was running.

    :param label: what ``args`` are, for messages (``"example_inputs set 2 (of 3)"``).
    """
    try:
        inspect.signature(root.forward).bind(*args)
    except TypeError as exc:
        raise TracingInputsError(
            f"{label} ({len(args)} positional argument(s)) do not fit "
            f"{type(root).__name__}.forward{inspect.signature(root.forward)}: {exc}",
            path="",
        ) from exc

    inputs: dict[str, TracingInputs] = {}
    outputs: dict[str, list[Any]] = {}
    pending: dict[int, list[tuple | None]] = {}
    handles = []

    def pre_hook(path: str):
        def hook(module, args, kwargs):
            positional = bind_positional(module, args, kwargs)
            seen = inputs.get(path, [])
            if (
                positional is None
                or len(seen) >= limit
                or any(same_inputs(s["forward"], positional) for s in seen)
            ):
                pending.setdefault(id(module), []).append(None)
            else:
                pending.setdefault(id(module), []).append(snapshot(positional))

        return hook

    def post_hook(path: str):
        def hook(module, args, kwargs, output):
            call = pending[id(module)].pop()
            if call is not None:
                inputs.setdefault(path, []).append({"forward": call})
                outputs.setdefault(path, []).append(snapshot(output))

        return hook

    seen_ids: set[int] = set()
    try:
        for path, module in targets.items():
            if id(module) in seen_ids:
                continue  # a shared module records once, under its first path
            seen_ids.add(id(module))
            handles.append(module.register_forward_pre_hook(pre_hook(path), with_kwargs=True))
            handles.append(module.register_forward_hook(post_hook(path), with_kwargs=True))
        try:
            # a private copy: a forward that mutates its inputs must not change the caller's
            root_output = call_for_values(root, args)
        except Exception as exc:
            where = _deepest_module_in_traceback(exc, modules)
            raise TracingInputsError(
                f"the eager run on {label} raised {exception_summary(exc)}",
                path=where,
            ) from exc
    finally:
        for handle in handles:
            handle.remove()
    return Recording([snapshot(root_output)], inputs, outputs)


def _deepest_module_in_traceback(exc: BaseException, modules: Mapping[str, torch.nn.Module]) -> str:
    by_id: dict[int, str] = {}
    for path, module in modules.items():
        by_id.setdefault(id(module), path)
    deepest = ""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in by_id:
            deepest = by_id[id(owner)]
        tb = tb.tb_next
    return deepest
