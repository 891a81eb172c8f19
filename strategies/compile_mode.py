"""Claims from torchstitch's own ``@compile_mode`` / ``set_compile_mode`` (kind ``decorator``)."""

from __future__ import annotations

import torch

from ..core.claims import Claim
from ..core.hookspecs import hookimpl
from ..core.modes import decorator_claim


@hookimpl
def torchstitch_claim(module: torch.nn.Module) -> Claim | None:
    return decorator_claim(module)
