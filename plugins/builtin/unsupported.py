"""The ``unsupported`` strategy: the module stays in Python and no compiled region may contain it."""

from __future__ import annotations

import torch

from torchstitch import CompileContext, Strategy, UnsupportedModuleError, hookimpl


def keep_in_python(module: torch.nn.Module, context: CompileContext) -> torch.nn.Module:
    # Its children may have been compiled on their own and stitched into this shell.
    return module


STRATEGY = Strategy(
    name="unsupported",
    family="python",
    compile=keep_in_python,
    compiles=False,
    containment_error=UnsupportedModuleError,
    description="cannot be compiled: stays in Python; an error inside a compiled region",
    color="red",
)


@hookimpl
def torchstitch_strategies() -> list[Strategy]:
    return [STRATEGY]
