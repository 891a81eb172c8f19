"""The ``script`` strategy: ``torch.jit.script`` of the node, its traced children stitched in."""

from __future__ import annotations

import re
import warnings

import torch

from torchstitch import CompileContext, Strategy, hookimpl
from torchstitch.plugins.toolkit import make_shell, shared_class

from .cache import CODEC

# torch warns about fx.GraphModule's instance-level annotations whenever one is
# scripted; the metadata it means is irrelevant to the compiled module.  Matched
# exactly, and only around scripting a GraphModule (pytorch/pytorch#89064).
_GRAPH_MODULE_WARNING = re.escape(
    "The TorchScript type system doesn't support instance-level annotations on empty "
    "non-base types in `__init__`. Instead, either 1) use a type annotation in the class "
    "body, or 2) wrap the type in `torch.jit.Attribute`."
)


def scriptable_graph_module(module: torch.fx.GraphModule, scratch: dict) -> torch.fx.GraphModule:
    """A private shell of ``module`` that TorchScript compiles once per distinct code.

    - Its class is shared with every interchangeable ``GraphModule`` of the compile
      call (:mod:`torchstitch.plugins.graph_modules`), so TorchScript's type cache
      compiles each distinct ``forward`` once, and parents holding identical
      children once too.
    - It tells TorchScript to ignore the ``fx.Graph`` attribute, which forward never
      reads: otherwise torch tries, and fails, to compile ``torch.fx.Graph`` as a
      TorchScript class for every instance, re-reading the source of all its
      methods (about 40% of scripting e3nn's generated code).
    """
    shell = make_shell(module)
    shell.__class__ = shared_class(module, scratch)
    ignored = list(getattr(module, "__jit_ignored_attributes__", ()))
    shell.__dict__["__jit_ignored_attributes__"] = [*ignored, "_graph"]
    return shell


def compile_script(module: torch.nn.Module, context: CompileContext) -> torch.nn.Module:
    if not isinstance(module, torch.fx.GraphModule):
        return torch.jit.script(module, **context.options)
    module = scriptable_graph_module(module, context.scratch)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_GRAPH_MODULE_WARNING, category=UserWarning)
        return torch.jit.script(module, **context.options)


STRATEGY = Strategy(
    name="script",
    family="torchscript",
    compile=compile_script,
    can_contain={"torchscript"},
    fallbacks=("trace",),
    compiled_types=(torch.jit.ScriptModule,),
    cache=CODEC,
    description="torch.jit.script: keeps data-dependent control flow; needs scriptable code",
    color="green",
)


@hookimpl
def torchstitch_strategies() -> list[Strategy]:
    return [STRATEGY]
