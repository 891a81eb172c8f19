"""torchstitch: compile a PyTorch module tree piece by piece and stitch it back together.

Each submodule is claimed by a compilation strategy (TorchScript ``script`` or
``trace``, or one a plugin registers); the engine plans the tree, validates it,
compiles bottom-up and stitches the compiled pieces into one model.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .core.api import compile, plan, script, trace, trace_module
from .core.claims import Claim, ClaimKind, Rule, compile_mode, get_compile_mode, set_compile_mode
from .core.engine import CompileOptions, CompileResult, Engine
from .core.errors import (
    AmbiguousClaimError,
    ArtifactError,
    NodeCompileError,
    PlanError,
    PluginError,
    StitchError,
    TorchScriptDeprecationWarning,
    TorchstitchWarning,
    TracingInputsError,
    UnknownStrategyError,
    UnsupportedModuleError,
    VerificationError,
)
from .core.hookspecs import hookimpl, hookspec
from .core.ir import Attempt, Node, Outcome, Plan
from .core.locate import Divergence, locate
from .core.plugin_manager import get_plugin_manager, make_plugin_manager
from .core.serialization import Artifact, ArtifactFormat, load, save
from .core.strategy import CompileContext, Strategy

__all__ = [
    "AmbiguousClaimError",
    "Artifact",
    "ArtifactError",
    "ArtifactFormat",
    "Attempt",
    "Claim",
    "Divergence",
    "ClaimKind",
    "CompileContext",
    "CompileOptions",
    "CompileResult",
    "Engine",
    "Node",
    "NodeCompileError",
    "Outcome",
    "Plan",
    "PlanError",
    "PluginError",
    "Rule",
    "StitchError",
    "Strategy",
    "TorchScriptDeprecationWarning",
    "TorchstitchWarning",
    "TracingInputsError",
    "UnknownStrategyError",
    "UnsupportedModuleError",
    "VerificationError",
    "__version__",
    "compile",
    "compile_mode",
    "get_compile_mode",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "load",
    "locate",
    "make_plugin_manager",
    "plan",
    "save",
    "script",
    "set_compile_mode",
    "trace",
    "trace_module",
]
