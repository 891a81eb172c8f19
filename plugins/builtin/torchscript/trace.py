"""The ``trace`` strategy: one ``torch.jit.trace_module`` per node, checked by the engine."""

from __future__ import annotations

import torch

from torchstitch import CompileContext, Strategy, hookimpl

from .cache import CODEC


def compile_trace(module: torch.nn.Module, context: CompileContext) -> torch.nn.Module:
    """``torch.jit.trace_module`` of the node on its first tracing input.

    A traced module returns a ``NamedTuple`` output as a plain tuple. The engine's
    verification refuses that (``VerificationError`` at the node, naming both
    types) rather than this strategy wrapping the traced module to rebuild the
    ``NamedTuple``: a Python wrapper is not a ``ScriptModule``, so it could not be
    saved nor stitched into a TorchScript parent, and a parent reading
    ``out.field`` would work only when left in Python. ``script`` keeps the fields.

    The module's ``training`` flag is fixed in the trace: see
    :mod:`torchstitch.core.training_mode`.
    """
    options = dict(context.options)
    # torch's own check re-traces the module for every check input (two thirds of
    # the cost of tracing small modules); the engine verifies the traced module
    # against eager on every input instead, so trace exactly once unless asked.
    options.setdefault("check_trace", False)
    try:
        return torch.jit.trace_module(module, context.inputs[0], **options)
    except RuntimeError as exc:
        if _STRICT_ADVICE not in str(exc):
            raise
        raise RuntimeError(f"{str(exc).strip()} {_STRICT_HOW}") from exc


# the end of torch's message for a list or dict output in strict mode, and how to do that here
_STRICT_ADVICE = "pass strict=False to trace()"
_STRICT_HOW = (
    "In torchstitch: trace_options={'strict': False} (or strategy_options={'trace': {'strict': False}})."
)


STRATEGY = Strategy(
    name="trace",
    family="torchscript",
    compile=compile_trace,
    needs_inputs=True,
    verify=True,
    can_contain={"torchscript"},
    fallbacks=("script",),
    compiled_types=(torch.jit.ScriptModule,),
    cache=CODEC,
    description="torch.jit.trace_module: records one run; data-dependent branches are frozen",
    color="cyan",
)


@hookimpl
def torchstitch_strategies() -> list[Strategy]:
    return [STRATEGY]
