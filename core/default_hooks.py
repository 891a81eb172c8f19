"""Default implementations of the engine's "around" hooks, registered in every plugin manager.

pytest's pattern (``pytest_runtest_call``): the engine calls a hook, this module's
``trylast`` implementation does the work, and a family's plugin wraps it with
``@hookimpl(wrapper=True)`` for what must happen around it (the TorchScript
plugin counts torch's deprecation warnings around the compile call and turns
TorchScript's graph optimizer off around each verification run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .hookspecs import hookimpl
from .inputs import call_for_values


@hookimpl(trylast=True)
def torchstitch_compile_run(execute: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    return execute()


@hookimpl(trylast=True)
def torchstitch_verification_run(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return call_for_values(function, args)
