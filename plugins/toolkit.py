"""What plugins build on: the helpers torchstitch's own plugins use, public for every plugin.

``torchstitch.core`` is private; a plugin imports the names of ``torchstitch``'s
``__all__`` and the helpers below, as the built-in plugins (``plugins/builtin/``),
the e3nn, export and inductor plugins and the example plugin do.  Documented in
docs/plugins.md ("What a plugin may import").
"""

from __future__ import annotations

from ..core._warn import warn
from ..core.errors import display_path, exception_summary, first_line
from ..core.inputs import as_example_args, cast_tensors, check_tracing_inputs, to_module
from ..core.modes import decorator_claim, is_known_compile_mode, known_compile_modes
from ..core.serialization import META_FILE, PLAN_FILE
from ..core.stitching import make_shell
from ..core.strategy import TracingInputs
from ..core.tracing_inputs import Resolved, resolve_tracing_inputs
from .graph_modules import class_key, shared_class

__all__ = [
    "META_FILE",
    "PLAN_FILE",
    "Resolved",
    "TracingInputs",
    "as_example_args",
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
    "resolve_tracing_inputs",
    "shared_class",
    "to_module",
    "warn",
]
