"""What plugins build on: the helpers torchstitch's own plugins use, public for every plugin.

``torchstitch.core`` is private; a plugin imports the names of ``torchstitch``'s
``__all__`` and the helpers below, as the built-in plugins (``plugins/builtin/``),
the e3nn, export and inductor plugins and the example plugin do.  Documented in
docs/plugins.md ("What a plugin may import").
"""

from __future__ import annotations

import torch

from ..core._warn import warn
from ..core.cache import CompileCache
from ..core.errors import display_path, exception_summary, first_line
from ..core.inputs import (
    as_example_args,
    as_example_sets,
    cast_tensors,
    check_tracing_inputs,
    record,
    to_module,
)
from ..core.modes import decorator_claim, is_known_compile_mode, known_compile_modes
from ..core.serialization import META_FILE, PLAN_FILE
from ..core.state import preserved_state
from ..core.stitching import make_shell
from ..core.strategy import TracingInputs
from ..core.tracing_inputs import Resolved, resolve_tracing_inputs
from .graph_modules import class_key, shared_class

__all__ = [
    "CompileCache",
    "META_FILE",
    "PLAN_FILE",
    "Resolved",
    "TracingInputs",
    "as_example_args",
    "as_example_sets",
    "cast_tensors",
    "check_tracing_inputs",
    "class_key",
    "decorator_claim",
    "display_path",
    "exception_summary",
    "first_line",
    "is_known_compile_mode",
    "known_compile_modes",
    "make_shell",
    "record_inputs",
    "resolve_tracing_inputs",
    "shared_class",
    "to_module",
    "warn",
]


def record_inputs(
    module: torch.nn.Module, calls: TracingInputs, *, limit: int = 1
) -> dict[str, TracingInputs]:
    """The inputs every submodule's ``forward`` sees when ``module`` runs eagerly on ``calls``.

    The run is the engine's recording run (no autograd graph where ``forward`` does not
    need one; inputs are snapshots); the buffers of ``module`` are restored afterwards,
    so the caller's model ends as it was.  A module shared by several paths is recorded
    under its first path; a module the run never calls has no entry, nor has a
    TorchScript module (it takes no Python hooks).

    :param module: the module to run (its own path is ``""``).
    :param calls: ``[{"forward": args}, ...]``; each is one eager run.
    :param limit: the most distinct calls kept per submodule.
    :returns: path relative to ``module`` -> ``[{"forward": args}, ...]``.
    :raises TracingInputsError: if the eager run fails (naming the deepest module running).
    """
    modules = dict(module.named_modules())
    targets = {path: m for path, m in modules.items() if not isinstance(m, torch.jit.ScriptModule)}
    found: dict[str, TracingInputs] = {}
    with preserved_state(module) as state:
        for call in calls:
            recording = record(module, tuple(call["forward"]), targets, limit=limit, modules=modules)
            state.restore()
            for path, seen in recording.inputs.items():
                kept = found.setdefault(path, [])
                kept.extend(seen[: limit - len(kept)])
    return found
