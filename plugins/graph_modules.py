"""One class for ``torch.fx.GraphModule`` instances that run the same generated code.

fx gives every ``GraphModule`` instance a class of its own (``GraphModule.__new__``
subclasses the given class once per instance), so compilers that cache by class
never see two instances as alike: TorchScript compiles the same ``forward`` again
for every copy of e3nn's generated tensor-product code, and so does every parent
holding one, and Dynamo's type guards fail in every repeated block.

:func:`shared_class` hands out, per compile call, one class for all instances
whose classes are interchangeable; strategies re-class their *own* shells with
it, never a user's module.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch

__all__ = ["class_key", "shared_class"]


def class_key(module: torch.fx.GraphModule) -> Hashable:
    """What makes two ``GraphModule`` classes interchangeable.

    The same name and bases, the same class attributes by name (fx sets
    ``forward``, ``_wrapped_call``, ...; anything else set on the class makes the
    key differ), the same generated source, and the same objects behind the
    global names that source uses.
    """
    cls = type(module)
    forward = cls.forward
    globals_ = forward.__globals__
    return (
        "graph-module-class",
        cls.__name__,
        cls.__bases__,
        tuple(sorted(cls.__dict__)),
        module.code,
        tuple((name, id(globals_.get(name))) for name in forward.__code__.co_names),
    )


def shared_class(module: torch.fx.GraphModule, scratch: dict[Any, Any]) -> type:
    """The class that ``module`` and every interchangeable ``GraphModule`` share in ``scratch``.

    :param module: a ``GraphModule``; not modified.
    :param scratch: the compile call's memo (``CompileContext.scratch``), so that
        classes are never shared across calls.
    :returns: the class of the first interchangeable instance seen in this call.
    """
    return scratch.setdefault(class_key(module), type(module))
