"""The compile cache's key of a node: everything that decides its compiled code, and nothing else.

:func:`node_key` hashes (sha256) a text made of

- the versions of torch, torchstitch and of the distribution of the plugin providing
  the strategy; the strategy's name, its options and its codec's version;
- the node's tracing inputs, as specs: per call, the method and each argument
  (a tensor by shape, dtype, device and ``requires_grad``, other values by value);
- every module of the node's subtree, by path relative to the node, in module order:
  a descendant compiled on its own is its strategy and its own key (which covers its
  subtree); any other module is :meth:`KeyWriter.module_text`.

What a module contributes is documented in docs/cache.md; the values of parameters and
buffers are never part of it: the cache refits them.
"""

from __future__ import annotations

import enum
import hashlib
import linecache
import logging
import operator
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .._version import __version__
from .ir import Node, Plan
from .strategy import Strategy, TracingInputs

__all__ = ["KeyWriter", "describe_value", "inputs_text", "node_key", "plugin_version", "tensor_spec"]

log = logging.getLogger(__name__)

#: version of this key's recipe: a change of what goes in changes every key
KEY_RECIPE = "1"

#: the attributes ``torch.nn.Module.__init__`` sets: torch's bookkeeping, not the module's
#: configuration (``training`` is written on its own; parameters and buffers by spec)
_TORCH_FIELDS = frozenset(torch.nn.Module().__dict__)

#: how deep :func:`describe_value` follows containers and called functions
_MAX_DEPTH = 6


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _from_torch(obj: Any) -> bool:
    """Code of torch itself: its version is in the key, its source need not be."""
    module = getattr(obj, "__module__", None) or ""
    return module == "torch" or module.startswith("torch.")


class KeyWriter:
    """Texts of classes and functions for the keys of one compile call (memoized per call:
    a network holds many instances of few classes)."""

    def __init__(self) -> None:
        self._classes: dict[type, str] = {}
        self._functions: dict[types.CodeType, str] = {}
        self._checked_files: set[str] = set()
        #: id of a caller's module -> its text: a miss keys each node twice (predicted, then
        #: compiled), and the caller's modules do not change during the call
        self._modules: dict[int, str] = {}

    # -- code ------------------------------------------------------------------

    def class_text(self, cls: type) -> str:
        """Source of every method and the plain class attributes of ``cls`` and of each of
        its bases below ``torch.nn.Module``; torch's own classes by name."""
        text = self._classes.get(cls)
        if text is None:
            parts = []
            for klass in cls.__mro__:
                if klass is torch.nn.Module or klass is object:
                    continue
                if _from_torch(klass) or not issubclass(klass, torch.nn.Module):
                    parts.append(f"class {_qualname(klass)}")
                    continue
                parts.append(f"class {_qualname(klass)}:\n{self._own_code(klass)}")
            text = self._classes[cls] = "\n".join(parts)
        return text

    def _own_code(self, klass: type) -> str:
        lines = []
        for name, value in sorted(klass.__dict__.items()):
            if name in ("__dict__", "__weakref__", "__module__", "__doc__", "__qualname__"):
                continue
            function = _function_of(value)
            if function is not None:
                lines.append(f" def {name}: {self.function_text(function, 0)}")
            elif name == "__annotations__":
                if not value:  # TorchScript gives every class it compiles an empty one
                    continue
                lines.append(f" annotations: {sorted((k, repr(v)) for k, v in value.items())}")
            else:
                lines.append(f" {name} = {describe_value(value, self, 0)}")
        return "\n".join(lines)

    def function_text(self, function: types.FunctionType, depth: int) -> str:
        """The source of ``function`` (by its code object, so a file edited and re-imported
        reads anew) and of the Python functions it calls by global name."""
        code = function.__code__
        text = self._functions.get(code)
        if text is not None:
            return text
        self._functions[code] = f"(recursive {code.co_name})"  # a function calling itself
        source = self._source(code)
        called = []
        if depth < _MAX_DEPTH:
            for name in sorted(set(_global_names(code))):
                target = function.__globals__.get(name)
                inner = _function_of(target)
                if inner is not None and not _from_torch(inner):
                    called.append(f"{name}: {self.function_text(inner, depth + 1)}")
        text = source + ("\n calls " + "\n ".join(called) if called else "")
        self._functions[code] = text
        return text

    def _source(self, code: types.CodeType) -> str:
        filename = code.co_filename
        if filename not in self._checked_files:
            linecache.checkcache(filename)  # a file edited since it was read
            self._checked_files.add(filename)
        lines = linecache.getlines(filename)
        if not lines:
            # no source (a C-compiled or generated function): its bytecode says what it does
            return f"<no source> {code.co_code.hex()} {code.co_consts!r} {code.co_names!r}"
        # the lines the compiled code spans (nested functions included): no tokenizing
        last = _last_line(code)
        return "".join(lines[code.co_firstlineno - 1 : last])

    # -- modules ---------------------------------------------------------------

    def module_text(self, module: torch.nn.Module) -> str:
        """What one module contributes to the key (its children are walked by the caller)."""
        text = self._modules.get(id(module))
        if text is None:
            text = self._modules[id(module)] = self._module_text(module)
        return text

    def _module_text(self, module: torch.nn.Module) -> str:
        cls = type(module)
        parts = [f"type {_qualname(cls)} training={module.training}"]
        if isinstance(module, torch.fx.GraphModule) or hasattr(module, "_c"):
            # generated classes have no source file, and a module the caller compiled
            # already is its compiled code: their code says what they run
            parts.append(f"code:\n{_code_of(module)}")
        parts.append(self.class_text(cls))
        for name, value in sorted(module.__dict__.items()):
            if name in _TORCH_FIELDS or "_hooks" in name or name in ("_graph", "graph", "_code", "code"):
                continue
            parts.append(f"attr {name} = {describe_value(value, self, 0)}")
        for name, parameter in module._parameters.items():
            parts.append(f"param {name} {tensor_spec(parameter)}")
        for name, tensor in module._buffers.items():
            persistent = name not in module._non_persistent_buffers_set
            parts.append(f"buffer {name} {tensor_spec(tensor)} persistent={persistent}")
        return "\n".join(parts)


def _code_of(module: torch.nn.Module) -> str:
    try:
        return str(module.code)
    except (AttributeError, RuntimeError):  # a compiled module without forward
        return "<no forward>"


def _function_of(value: Any) -> types.FunctionType | None:
    """The Python function behind a method, static/class method or property getter."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    elif isinstance(value, property):
        value = value.fget
    elif isinstance(value, types.MethodType):
        value = value.__func__
    while hasattr(value, "__wrapped__") and not isinstance(value, types.FunctionType):
        value = value.__wrapped__
    return value if isinstance(value, types.FunctionType) else None


def _last_line(code: types.CodeType) -> int:
    """The last source line ``code`` spans, nested functions included.

    3.11+: where its last expression ends (a multi-line string or call included); 3.10:
    where its last instruction's line starts.  map/filter/max iterate in C: a network's
    classes have tens of thousands of instructions, and this runs on every compile.
    """
    positions = getattr(code, "co_positions", None)
    if positions is not None:
        ends = filter(None, map(_END_LINE, positions()))
    else:
        ends = filter(None, map(_LINE, code.co_lines()))
    last = max(ends, default=code.co_firstlineno)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            last = max(last, _last_line(const))
    return last


#: fields of ``co_positions()`` (line, end line, column, end column) and ``co_lines()``
#: (start offset, end offset, line) entries
_END_LINE = operator.itemgetter(1)
_LINE = operator.itemgetter(2)


def _global_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested functions, comprehensions
            yield from _global_names(const)


def tensor_spec(tensor: torch.Tensor | None) -> str:
    if tensor is None:
        return "None"
    return f"{tuple(tensor.shape)} {tensor.dtype} {tensor.device} requires_grad={tensor.requires_grad}"


def describe_value(value: Any, writer: KeyWriter | None, depth: int, *, tensor_values: bool = True) -> str:
    """A non-tensor value as compilation may bake it in (see docs/cache.md for the rule).

    :param tensor_values: a plain tensor attribute is baked in as a constant, so by value
        (sha256 of its bytes); tracing inputs pass ``False``: by spec only.
    """
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, enum.Enum):
        return f"{_qualname(type(value))}.{value.name}"
    if isinstance(value, torch.Tensor):
        spec = tensor_spec(value)
        if not tensor_values or value.is_meta:
            return f"tensor {spec}"
        data = value.detach().cpu().contiguous()
        return f"tensor {spec} {hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()}"
    if isinstance(value, (torch.dtype, torch.device, torch.Size, torch.memory_format, torch.layout)):
        return repr(value)
    if depth >= _MAX_DEPTH:
        return f"<{type(value).__qualname__}>"
    if isinstance(value, (tuple, list)):
        items = ", ".join(describe_value(v, writer, depth + 1, tensor_values=tensor_values) for v in value)
        return f"{type(value).__name__}[{items}]"
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}{sorted(describe_value(v, writer, depth + 1) for v in value)}"
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{k!r}: {describe_value(v, writer, depth + 1, tensor_values=tensor_values)}"
            for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))
        )
        return f"{type(value).__name__}{{{items}}}"
    if isinstance(value, torch.nn.Module):
        return f"module {_qualname(type(value))}"
    if isinstance(value, type):
        return f"class {_qualname(value)}"
    function = _function_of(value)
    if function is not None:
        if writer is None or _from_torch(function):
            return f"function {_qualname(function)}"
        return f"function {_qualname(function)}: {writer.function_text(function, depth + 1)}"
    if callable(value) and not hasattr(value, "__dict__"):  # builtins: torch.sigmoid, math.cos
        return f"callable {_qualname(value)}"
    text = repr(value)
    if " at 0x" in text or " object at " in text:  # an identity, not a value (e3nn Irreps are values)
        return f"object {_qualname(type(value))}"
    return f"{_qualname(type(value))}({text})"


def inputs_text(inputs: TracingInputs) -> str:
    """The tracing inputs as specs: per call, method and arguments."""
    return "\n".join(
        f"call {i} {method}: {describe_value(args, None, 0, tensor_values=False)}"
        for i, call in enumerate(inputs)
        for method, args in sorted(call.items())
    )


def plugin_version(pm: Any, plugin_name: str) -> str:
    """The distribution (name and version) of the plugin ``plugin_name``: pluggy's record
    for plugins loaded from entry points, else the top-level package's ``__version__``."""
    plugin = pm.get_plugin(plugin_name)
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            name = dist.project_name if hasattr(dist, "project_name") else dist.metadata["name"]
            return f"{name} {dist.version}"
    module = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
    top = sys.modules.get(module.partition(".")[0])
    return f"{module.partition('.')[0]} {getattr(top, '__version__', '?')}"


def _walk(
    plan: Plan,
    node: Node,
    relative: str,
    modules: Mapping[str, torch.nn.Module],
    compiled: Mapping[str, str | None],
    writer: KeyWriter,
    seen: dict[int, str],
) -> Iterator[str]:
    module = modules[node.path]
    canonical = node if node.shared_with is None else plan[node.shared_with]
    if canonical.path in compiled and relative:
        entry = compiled[canonical.path]
        if entry is None:
            raise _NoKey(canonical.path)
        yield f"[{relative}] compiled {entry}"
        return
    if id(module) in seen:
        yield f"[{relative}] same module as [{seen[id(module)]}]"
        return
    seen[id(module)] = relative
    yield f"[{relative}] {writer.module_text(module)}"
    for child in canonical.children:
        yield from _walk(
            plan,
            child,
            f"{relative}.{child.name}" if relative else child.name,
            modules,
            compiled,
            writer,
            seen,
        )


def node_key(
    plan: Plan,
    node: Node,
    modules: Mapping[str, torch.nn.Module],
    *,
    strategy: Strategy,
    options: Mapping[str, Any],
    inputs: TracingInputs,
    plugins: str,
    compiled: Mapping[str, str | None],
    writer: KeyWriter,
) -> str | None:
    """The sha256 hex key of ``node`` compiled by ``strategy``; ``None`` when a descendant
    compiled on its own has no key (its strategy is not cached): nor is ``node`` then.

    :param modules: the caller's module at each path.
    :param plugins: the plugins shaping the code, with their versions (:func:`plugin_version`).
    :param compiled: descendants compiled on their own, path -> ``"strategy key"`` (or
        ``None``); any other descendant is part of this node's code.
    """
    codec = "none" if strategy.cache is None else strategy.cache.version
    header = [
        f"recipe {KEY_RECIPE}",
        f"torch {torch.__version__}",
        f"torchstitch {__version__}",
        f"plugins {plugins}",
        f"strategy {strategy.name} codec {codec}",
        f"options {describe_value(dict(options), writer, 0)}",
        inputs_text(inputs),
    ]
    digest = hashlib.sha256()
    try:
        for text in (*header, *_walk(plan, node, "", modules, compiled, writer, {})):
            digest.update(text.encode("utf-8", "backslashreplace"))
            digest.update(b"\n")
    except _NoKey as exc:
        log.debug("%s is not cached: %s compiles on its own without a key", node.path or "<root>", exc)
        return None
    return digest.hexdigest()


class _NoKey(Exception):
    """A descendant compiled on its own without a key (its path is the message)."""
