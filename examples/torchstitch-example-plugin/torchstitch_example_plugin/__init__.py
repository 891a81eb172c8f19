"""An example torchstitch plugin: a ``script_optimized`` strategy, a claim rule, a tracing-input provider.

Registered through the ``torchstitch`` entry-point group as ``example_plugin``
(see this package's pyproject.toml); torchstitch loads it into every plugin
manager unless ``TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD`` is set or a call blocks it
with ``plugins=["no:example_plugin"]``.  A module-level plugin: pluggy finds the
``@hookimpl`` functions below by their ``torchstitch_`` names.
"""

from __future__ import annotations

import logging

import torch

import torchstitch as ts
from torchstitch.plugins.toolkit import TracingInputs

log = logging.getLogger(__name__)

#: class attribute that makes this plugin claim a module for ``script_optimized``
CLAIM_ATTR = "example_plugin_claim"
#: class attribute giving the shape of the random tensor this plugin traces a module on
SHAPE_ATTR = "example_plugin_input_shape"


def compile_script_optimized(module: torch.nn.Module, context: ts.CompileContext) -> torch.nn.Module:
    """``torch.jit.script``; a root in eval mode is also frozen and optimized for inference.

    Only the root: a frozen module cannot be a submodule of a scripted parent.
    """
    scripted = torch.jit.script(module, **context.options)
    if context.node.path == "" and not module.training:
        log.debug("optimizing the root for inference")
        return torch.jit.optimize_for_inference(scripted)
    return scripted


SCRIPT_OPTIMIZED = ts.Strategy(
    name="script_optimized",
    family="torchscript",
    compile=compile_script_optimized,
    can_contain={"torchscript"},
    fallbacks=("script",),
    # a ScriptModule in the caller's model is already compiled, as for the built-in 'script'
    compiled_types=(torch.jit.ScriptModule,),
    description="torch.jit.script, then optimize_for_inference for a root in eval mode (example plugin)",
)


@ts.hookimpl
def torchstitch_strategies() -> list[ts.Strategy]:
    return [SCRIPT_OPTIMIZED]


@ts.hookimpl
def torchstitch_claim(module: torch.nn.Module) -> ts.Claim | None:
    # read through the type: cheap, and the hook runs once per module in the tree
    if getattr(type(module), CLAIM_ATTR, False) is True:
        return ts.Claim(
            SCRIPT_OPTIMIZED.name, ts.ClaimKind.RULE, "plugin example_plugin", f"{CLAIM_ATTR} = True"
        )
    return None


@ts.hookimpl(trylast=True)
def torchstitch_tracing_inputs(module: torch.nn.Module, n: int) -> TracingInputs | None:
    """Random inputs of the shape the class declares; asked only after the built-in providers."""
    shape = getattr(type(module), SHAPE_ATTR, None)
    if shape is None:
        return None
    return [{"forward": (torch.randn(*shape),)} for _ in range(n)]
