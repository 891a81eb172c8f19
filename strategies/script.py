"""The ``script`` strategy: ``torch.jit.script`` of the node, its traced children stitched in."""

from __future__ import annotations

import re
import warnings

import torch

from ..core.hookspecs import hookimpl
from ..core.strategy import CompileContext, Strategy

# torch warns about fx.GraphModule's instance-level annotations whenever one is
# scripted; the metadata it means is irrelevant to the compiled module.  Matched
# exactly, and only around scripting a GraphModule (pytorch/pytorch#89064).
_GRAPH_MODULE_WARNING = re.escape(
    "The TorchScript type system doesn't support instance-level annotations on empty "
    "non-base types in `__init__`. Instead, either 1) use a type annotation in the class "
    "body, or 2) wrap the type in `torch.jit.Attribute`."
)


def compile_script(module: torch.nn.Module, context: CompileContext) -> torch.nn.Module:
    if not isinstance(module, torch.fx.GraphModule):
        return torch.jit.script(module, **context.options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_GRAPH_MODULE_WARNING, category=UserWarning)
        return torch.jit.script(module, **context.options)


STRATEGY = Strategy(
    name="script",
    family="torchscript",
    compile=compile_script,
    can_contain={"torchscript"},
    fallbacks=("trace",),
    description="torch.jit.script: keeps data-dependent control flow; needs scriptable code",
)


@hookimpl
def torchstitch_strategies() -> list[Strategy]:
    return [STRATEGY]
