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
graph break. Options (``strategy_options={"inductor": {...}}``) go to
``torch.compile`` (``backend``, ``mode``, ``dynamic``, ``fullgraph``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import torch

from ...core.engine import make_shell
from ...core.hookspecs import hookimpl
from ...core.ir import Node
from ...core.strategy import CompileContext, Strategy

__all__ = ["STRATEGY", "compile_inductor"]

log = logging.getLogger(__name__)


def _python_nodes(node: Node, strategies: Mapping[str, Strategy]) -> Iterator[Node]:
    """Descendants of ``node`` claimed by a strategy that keeps them in Python (family
    ``python``); their own subtrees are not searched."""
    for child in node.children:
        strategy = None if child.claim is None else strategies.get(child.claim.strategy)
        if strategy is not None and strategy.family == "python":
            yield child
        else:
            yield from _python_nodes(child, strategies)


def _disable_at(root: torch.nn.Module, relative: list[str]) -> torch.nn.Module:
    """A copy of the path to ``relative`` below ``root`` (private shells), its end's forward disabled."""
    shell = make_shell(root)
    name, rest = relative[0], relative[1:]
    child = root._modules[name]
    if rest:
        shell._modules[name] = _disable_at(child, rest)
    else:
        leaf = make_shell(child)
        leaf.forward = torch.compiler.disable(leaf.forward, recursive=True)
        shell._modules[name] = leaf
    return shell


def _share_graph_module_classes(module: torch.nn.Module, scratch: dict) -> None:
    """Give ``GraphModule`` instances with identical generated code one class (per compile call).

    Only the engine's shells are re-classed: every module inside a claimed
    node's region is a private shell, never the user's module.
    """
    for sub in module.modules():
        if not isinstance(sub, torch.fx.GraphModule):
            continue
        forward = type(sub).forward
        names = forward.__code__.co_names
        # same source and the same global objects behind the names it uses
        key = (
            "inductor",
            "graph-module",
            sub.code,
            tuple((n, id(forward.__globals__.get(n))) for n in names),
        )
        cls = scratch.setdefault(key, type(sub))
        if type(sub) is not cls:
            sub.__class__ = cls


def compile_inductor(module: torch.nn.Module, context: CompileContext) -> torch.nn.Module:
    """``torch.compile`` the node's shell; ``unsupported`` descendants run eagerly.

    :param module: the node's shell, compiled children stitched in.
    :param context: ``context.options`` are ``torch.compile`` keyword arguments.
    """
    _share_graph_module_classes(module, context.scratch)
    prefix = f"{context.node.path}." if context.node.path else ""
    for python_node in _python_nodes(context.node, context.strategies):
        relative = python_node.path[len(prefix) :].split(".")
        module = _disable_at(module, relative)
        log.debug("%s runs eagerly inside the inductor region", python_node.path)
    return torch.compile(module, **context.options)


STRATEGY = Strategy(
    name="inductor",
    family="inductor",
    compile=compile_inductor,
    can_contain={"inductor", "python"},
    description="torch.compile (regional, lazy: compiles on first call); stays a Python module",
)


@hookimpl
def torchstitch_strategies() -> list[Strategy]:
    return [STRATEGY]
