"""torch.compile integration: the ``inductor`` strategy (regional compilation).

Registered through the ``torchstitch`` entry-point group (name ``inductor``).
Each node claimed ``inductor`` becomes ``torch.compile(node)``; the compiled
module stays a Python ``nn.Module`` (family ``inductor``), so it cannot sit in a
TorchScript or export region, and it is not saved as an artifact.

Identical repeated blocks (``layers.0``, ``layers.1``, ... of one class) share
compiled code: Dynamo caches by the ``forward`` code object and, with torch's
default ``inline_inbuilt_nn_modules``, treats parameters as inputs, so the
second instance reuses the first one's graph instead of recompiling.  fx gives
every ``GraphModule`` instance a class of its own (e3nn's generated tensor
product code, say), which would fail Dynamo's type guards in every repeated
block; within one compile call, private copies of ``GraphModule`` instances with the
same generated code are given one class, so those blocks share a graph too.

Descendants claimed ``unsupported`` (family ``python``) stay in Python inside
the region: their ``forward`` is wrapped with ``torch.compiler.disable``, a
graph break.

Claiming both a node and blocks below it ``inductor`` (the root and
``layers.*``, say) compiles the node as one graph in which each block is a
``torch.compiler.nested_compile_region``: Dynamo traces a block's code once and
Inductor reuses it for every block that passes the same guards (hierarchical
compilation).  This keeps the latency of one whole-model graph (no eager glue
between regions) while repeated blocks are compiled once.  A nested block gets
private copies of its tensor arguments, as higher-order ops reject inputs that
alias each other; a block with Python islands inside cannot be a region and is
traced into the outer graph instead.  Only the outer node's options apply.

Options (``strategy_options={"inductor": {...}}``) go to
``torch.compile`` (``backend``, ``mode``, ``dynamic``, ``fullgraph``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import cast

import torch

from torchstitch import CompileContext, Node, Strategy, hookimpl
from torchstitch.plugins.toolkit import make_shell, shared_class

__all__ = ["STRATEGY", "compile_inductor"]

log = logging.getLogger(__name__)


def _descendants(
    node: Node, strategies: Mapping[str, Strategy], families: set[str]
) -> Iterator[tuple[Node, Strategy]]:
    """The topmost descendants of ``node`` claimed by a strategy of one of ``families``, with
    that strategy; their own subtrees are not searched."""
    for child in node.children:
        strategy = None if child.claim is None else strategies.get(child.claim.strategy)
        if strategy is not None and strategy.family in families:
            yield child, strategy
        else:
            yield from _descendants(child, strategies, families)


def _replace_at(
    root: torch.nn.Module, relative: list[str], replace: Callable[[torch.nn.Module], torch.nn.Module]
) -> torch.nn.Module:
    """A copy of the path to ``relative`` below ``root`` (private shells), its end replaced."""
    shell = make_shell(root)
    name, rest = relative[0], relative[1:]
    child = root._modules[name]
    assert child is not None  # the path of a node of the plan
    shell._modules[name] = _replace_at(child, rest, replace) if rest else replace(child)
    return shell


def _disabled(module: torch.nn.Module) -> torch.nn.Module:
    """A shell of ``module`` whose forward Dynamo skips (a graph break: it runs eagerly)."""
    leaf = make_shell(module)
    leaf.forward = torch.compiler.disable(leaf.forward, recursive=True)
    return leaf


def _region_class(cls: type[torch.nn.Module], scratch: dict) -> type:
    """``cls`` with its forward a ``torch.compiler.nested_compile_region`` (one per class and call).

    Higher-order ops reject inputs that alias each other (``edge_index[0]`` and
    ``edge_index[1]`` are views of one tensor), so the region receives private
    copies of its tensor arguments: one copy per argument and call, which kept
    the reference networks within a few percent of whole-model latency
    (``benchmarks/deploy.py``).
    """

    def make() -> type:
        region = torch.compiler.nested_compile_region(cls.forward)

        def forward(self, *args, **kwargs):
            args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
            kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            return region(self, *args, **kwargs)

        namespace = {"forward": forward, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
        return type(cls.__name__, (cls,), namespace)

    key = ("inductor", "nested-region", cls)
    if key not in scratch:
        scratch[key] = make()
    return scratch[key]


def _nested(compiled: torch.nn.Module, scratch: dict) -> torch.nn.Module:
    """A compiled inductor child as a nested compile region of its parent's graph."""
    inner = getattr(compiled, "_orig_mod", compiled)  # torch.compile's OptimizedModule
    shell = make_shell(inner)
    shell.__class__ = _region_class(type(inner), scratch)
    return shell


def _inlined(compiled: torch.nn.Module) -> torch.nn.Module:
    """A compiled inductor child traced into its parent's graph (its islands stay disabled)."""
    return getattr(compiled, "_orig_mod", compiled)


def _share_graph_module_classes(module: torch.nn.Module, scratch: dict) -> None:
    """Give ``GraphModule`` instances with identical generated code one class (per compile call).

    Only the engine's shells are re-classed: every module inside a claimed
    node's region is a private shell, never the user's module.
    """
    for sub in module.modules():
        if isinstance(sub, torch.fx.GraphModule):
            sub.__class__ = shared_class(sub, scratch)


def compile_inductor(module: torch.nn.Module, context: CompileContext) -> torch.nn.Module:
    """``torch.compile`` the node's shell.

    ``unsupported`` descendants run eagerly; ``inductor`` descendants become nested
    compile regions of this graph, or are traced into it if they hold Python islands.

    :param module: the node's shell, compiled children stitched in.
    :param context: ``context.options`` are ``torch.compile`` keyword arguments.
    """
    _share_graph_module_classes(module, context.scratch)
    node, strategies = context.node, context.strategies
    prefix = f"{node.path}." if node.path else ""
    for inner, strategy in _descendants(node, strategies, {"python", "inductor"}):
        relative = inner.path[len(prefix) :].split(".")
        if strategy.family == "python":
            module = _replace_at(module, relative, _disabled)
            log.debug("%s runs eagerly inside the inductor region", inner.path)
        elif next(_descendants(inner, strategies, {"python"}), None) is not None:
            module = _replace_at(module, relative, _inlined)
            log.debug(
                "%s is traced into %s's graph (it has Python islands)", inner.path, node.path or "<root>"
            )
        else:
            module = _replace_at(module, relative, lambda m: _nested(m, context.scratch))
            log.debug("%s is a nested compile region of %s", inner.path, node.path or "<root>")
    # a module in gives an OptimizedModule out; torch's annotations say only "a callable"
    return cast(torch.nn.Module, torch.compile(module, **context.options))


STRATEGY = Strategy(
    name="inductor",
    family="inductor",
    compile=compile_inductor,
    can_contain={"inductor", "python"},
    description="torch.compile (regional, lazy: compiles on first call); stays a Python module",
    color="magenta",
)


@hookimpl
def torchstitch_strategies() -> list[Strategy]:
    return [STRATEGY]
