"""Built-in tracing-input providers: the caller's ``inputs=``, ``_make_tracing_inputs``, recorded."""

from __future__ import annotations

import torch

from torchstitch import CompileContext, Node, hookimpl
from torchstitch.plugins.toolkit import TracingInputs, to_module

#: e3nn's contract: ``module._make_tracing_inputs(n) -> list[dict[str, tuple]]``
MAKE_TRACING_INPUTS = "_make_tracing_inputs"


class CallerInputs:
    """Inputs the caller gave for this path with ``compile(inputs={path: ...})``."""

    @hookimpl(tryfirst=True)
    def torchstitch_tracing_inputs(self, node: Node, context: CompileContext) -> TracingInputs | None:
        return context.caller_inputs.get(node.path)


class MakeTracingInputs:
    """The module's own ``_make_tracing_inputs(n)`` method (instance attribute or class).

    As in e3nn, tensors are moved to the module's device and floating tensors
    cast to its floating dtype (integer index tensors keep theirs).
    """

    @hookimpl(tryfirst=True)
    def torchstitch_tracing_inputs(self, module: torch.nn.Module, n: int) -> TracingInputs | None:
        # Test the type first: a miss on the instance goes through nn.Module.__getattr__ (slow).
        if MAKE_TRACING_INPUTS in module.__dict__ or hasattr(type(module), MAKE_TRACING_INPUTS):
            made = getattr(module, MAKE_TRACING_INPUTS)(n)
            # malformed answers are reported by the engine; only cast well-formed lists
            return to_module(made, module) if isinstance(made, list) else made
        return None


class RecordedInputs:
    """Inputs recorded at this path during one eager run of the root on ``example_inputs``."""

    @hookimpl(tryfirst=True)
    def torchstitch_tracing_inputs(self, node: Node, context: CompileContext) -> TracingInputs | None:
        return context.recorded_inputs.get(node.path)
