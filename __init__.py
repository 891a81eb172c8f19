"""torchstitch: compile a PyTorch module tree piece by piece and stitch it back together.

Each submodule is claimed by a compilation strategy (TorchScript ``script`` or
``trace``, or one a plugin registers); the engine plans the tree, validates it,
compiles bottom-up and stitches the compiled pieces into one model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what static tools and IDEs read; at run time names load lazily
    from ._version import __version__
    from .core.api import (
        compile,
        plan,
    )
    from .core.cache import CacheCodec
    from .core.claims import (
        Claim,
        ClaimKind,
        Rule,
    )
    from .core.engine import Engine
    from .core.errors import (
        AmbiguousClaimError,
        ArtifactError,
        InputSpecError,
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
    from .core.hookspecs import (
        hookimpl,
        hookspec,
    )
    from .core.ir import (
        Attempt,
        Node,
        Outcome,
        Plan,
    )
    from .core.locate import (
        Divergence,
        locate,
    )
    from .core.modes import (
        compile_mode,
        get_compile_mode,
        set_compile_mode,
    )
    from .core.options import CompileOptions
    from .core.plugin_manager import (
        get_plugin_manager,
        make_plugin_manager,
    )
    from .core.provenance import plan_of
    from .core.result import CompileResult
    from .core.serialization import (
        Artifact,
        ArtifactFormat,
        load,
        save,
    )
    from .core.strategy import (
        CompileContext,
        Strategy,
    )
    from .plugins.builtin.torchscript.api import (
        script,
        trace,
        trace_module,
    )

# Public names load on first use, so that `import torchstitch` (and the pytest
# plugin every pytest session of an environment loads) does not import torch.
_LAZY: dict[str, str] = {
    "__version__": "._version",
    "compile": ".core.api",
    "plan": ".core.api",
    "script": ".plugins.builtin.torchscript.api",
    "trace": ".plugins.builtin.torchscript.api",
    "trace_module": ".plugins.builtin.torchscript.api",
    "CacheCodec": ".core.cache",
    "Claim": ".core.claims",
    "ClaimKind": ".core.claims",
    "Rule": ".core.claims",
    "compile_mode": ".core.modes",
    "get_compile_mode": ".core.modes",
    "set_compile_mode": ".core.modes",
    "CompileOptions": ".core.options",
    "CompileResult": ".core.result",
    "Engine": ".core.engine",
    "AmbiguousClaimError": ".core.errors",
    "ArtifactError": ".core.errors",
    "InputSpecError": ".core.errors",
    "NodeCompileError": ".core.errors",
    "PlanError": ".core.errors",
    "PluginError": ".core.errors",
    "StitchError": ".core.errors",
    "TorchScriptDeprecationWarning": ".core.errors",
    "TorchstitchWarning": ".core.errors",
    "TracingInputsError": ".core.errors",
    "UnknownStrategyError": ".core.errors",
    "UnsupportedModuleError": ".core.errors",
    "VerificationError": ".core.errors",
    "hookimpl": ".core.hookspecs",
    "hookspec": ".core.hookspecs",
    "Attempt": ".core.ir",
    "Node": ".core.ir",
    "Outcome": ".core.ir",
    "Plan": ".core.ir",
    "Divergence": ".core.locate",
    "locate": ".core.locate",
    "get_plugin_manager": ".core.plugin_manager",
    "make_plugin_manager": ".core.plugin_manager",
    "plan_of": ".core.provenance",
    "Artifact": ".core.serialization",
    "ArtifactFormat": ".core.serialization",
    "load": ".core.serialization",
    "save": ".core.serialization",
    "CompileContext": ".core.strategy",
    "Strategy": ".core.strategy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AmbiguousClaimError",
    "Artifact",
    "ArtifactError",
    "ArtifactFormat",
    "Attempt",
    "CacheCodec",
    "Claim",
    "Divergence",
    "ClaimKind",
    "CompileContext",
    "CompileOptions",
    "CompileResult",
    "Engine",
    "InputSpecError",
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
    "plan_of",
    "save",
    "script",
    "set_compile_mode",
    "trace",
    "trace_module",
]
