"""The ``trace`` strategy: one ``torch.jit.trace_module`` per node, checked by the engine."""

from __future__ import annotations

import torch

from ..core.hookspecs import hookimpl
from ..core.strategy import CompileContext, Strategy


def compile_trace(module: torch.nn.Module, context: CompileContext) -> torch.nn.Module:
    options = dict(context.options)
    # torch's own check re-traces the module for every check input (two thirds of
    # the cost of tracing small modules); the engine verifies the traced module
    # against eager on every input instead, so trace exactly once unless asked.
    options.setdefault("check_trace", False)
    return torch.jit.trace_module(module, context.inputs[0], **options)


STRATEGY = Strategy(
    name="trace",
    family="torchscript",
    compile=compile_trace,
    needs_inputs=True,
    verify=True,
    can_contain={"torchscript"},
    fallbacks=("script",),
    description="torch.jit.trace_module: records one run; data-dependent branches are frozen",
)


@hookimpl
def torchstitch_strategies() -> list[Strategy]:
    return [STRATEGY]
