"""Tiny modules and helpers that several test files use alike; import them by name
(``from modules import Leaf``: ``tests/`` is on ``sys.path``).

A module lives here only when several files need exactly this module; one a single file
needs, or a variant of one here, stays in that file.  Each section says who uses it.

Deliberately no ``from __future__ import annotations``: TorchScript reads these classes
and cannot read string annotations.
"""

import torch
from torch import nn

import torchstitch as ts

# --------------------------------------------------------------------------
# Linear(4, 4) leaves and a two-level tree of them (tests/core: bad inputs, claims,
# fallback and locate, locate, planner, plugin manager)
# --------------------------------------------------------------------------


class Leaf(nn.Module):
    """``tanh(lin(x))`` on 4 features; compiled with whatever region holds it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x))


@ts.compile_mode("trace")
class TracedLeaf(Leaf):
    pass


@ts.compile_mode("script")
class ScriptedLeaf(Leaf):
    pass


@ts.compile_mode("unsupported")
class UnsupportedLeaf(Leaf):
    pass


@ts.compile_mode("script")
class Unscriptable(nn.Module):
    """A lambda in forward: scripting fails, tracing works."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        f = lambda t: t * 2.0  # noqa: E731
        return f(self.lin(x))


class Block(nn.Module):
    """``b(a(x))``; two plain :class:`Leaf` unless given."""

    def __init__(self, a=None, b=None):
        super().__init__()
        self.a = a if a is not None else Leaf()
        self.b = b if b is not None else Leaf()

    def forward(self, x):
        return self.b(self.a(x))


class Model(nn.Module):
    """``left(x) + right(x)``; two default :class:`Block` unless given (paths ``left.a``, ...)."""

    def __init__(self, left=None, right=None):
        super().__init__()
        self.left = left if left is not None else Block()
        self.right = right if right is not None else Block()

    def forward(self, x):
        return self.left(x) + self.right(x)


def x4() -> torch.Tensor:
    """An input of :class:`Model` (and of every Linear(4, 4) leaf)."""
    return torch.randn(5, 4)


def plus_half(module: nn.Module) -> nn.Module:
    """A copy of the shell whose forward adds 0.5: same children and tensors, so the traced
    result keeps the module's structure (paths) and only its output is wrong."""
    cls = type(module)

    def forward(self, *args):
        return cls.forward(self, *args) + 0.5

    wrong = object.__new__(type(f"Wrong{cls.__name__}", (cls,), {"forward": forward}))
    wrong.__dict__.update(module.__dict__)
    return wrong


# --------------------------------------------------------------------------
# control flow and wrappers (tests/core: bad inputs, engine, inputs, properties, state,
# verify)
# --------------------------------------------------------------------------


class Stack(nn.Module):
    """``layers.0``, ``layers.1``, ...: called in order."""

    def __init__(self, *children):
        super().__init__()
        self.layers = nn.ModuleList(children)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Branch(nn.Module):
    """Data-dependent control flow: a trace keeps only the branch its input took."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2.0
        return x - 1.0


@ts.compile_mode("trace")
class TracedBranch(Branch):
    pass


class AddOne(nn.Module):
    """``inner(x) + 1``: ``inner`` made wrong, or merely wrapped."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 1.0


# --------------------------------------------------------------------------
# a traced child under a parent, and the outcome of its node
# (tests/core/test_inputs.py, tests/plugins/builtin/test_inputs.py)
# --------------------------------------------------------------------------


@ts.compile_mode("trace")
class Probe(nn.Module):
    """A traced ``tanh(lin(x))`` on 3 features: the node whose tracing inputs a test looks at."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x))


class Parent(nn.Module):
    """``post(child(x))`` on 3 features: ``child`` is the node under test."""

    def __init__(self, child):
        super().__init__()
        self.child = child
        self.post = nn.Linear(3, 3)

    def forward(self, x):
        return self.post(self.child(x))


def outcome(result: ts.CompileResult, path: str) -> ts.Outcome:
    """The outcome of the node at ``path``, which must have been compiled."""
    node = result.plan[path]
    assert node.outcome is not None, f"{path} was not compiled"
    return node.outcome


# --------------------------------------------------------------------------
# artifacts of TorchScript (tests/core/test_serialization.py,
# tests/plugins/builtin/test_torchscript_format.py)
# --------------------------------------------------------------------------


@ts.compile_mode("trace")
class TracedSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.sigmoid(self.lin(x))


class SignSwitch(nn.Module):
    """A data-dependent ``if`` (scripting keeps both branches) around a traced child."""

    def __init__(self):
        super().__init__()
        self.traced = TracedSigmoid()
        self.other = nn.Linear(3, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.traced(x) * 2.0
        return self.other(x)


class CallsIgnored(nn.Module):
    """Calls a ``@torch.jit.ignore`` method: it scripts, but ``torch.jit.save`` refuses it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    @torch.jit.ignore
    def python_only(self, x):
        return x * 2.0

    def forward(self, x):
        return self.python_only(self.lin(x))


class HoldsIgnored(nn.Module):
    """:class:`CallsIgnored` deeper down, at ``block.1``."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(3, 3), CallsIgnored())

    def forward(self, x):
        return self.block(x)


def compile_scripted(model: nn.Module, x: torch.Tensor) -> ts.CompileResult:
    """``model`` compiled with its root scripted, verified on ``x``."""
    return ts.Engine(rules=[ts.Rule("script", path="")]).compile(model, example_inputs=(x,))
