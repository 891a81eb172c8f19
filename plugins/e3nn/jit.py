"""A drop-in for ``e3nn.util.jit`` backed by torchstitch's engine.

The same names, signatures and defaults as ``e3nn.util.jit`` (``compile_mode``,
``get_compile_mode``, ``compile``, ``script``, ``trace``, ``trace_module``,
``get_tracing_inputs`` and, where the installed e3nn has it,
``disable_e3nn_codegen``), so ``from e3nn.util import jit`` can become
``from torchstitch.plugins.e3nn import jit``.  What differs, on purpose:

- Nothing is written to the caller's modules.  e3nn's ``script()``/``trace()``
  set ``__e3nn_compile_mode__`` (and a ``_make_tracing_inputs`` lambda holding
  the example tensors) on the module they are given; here the root's strategy is
  an override claim and the example inputs are per-path tracing inputs of the
  call.
- ``in_place=True`` (the default, as in e3nn) swaps compiled children into the
  caller's modules only once the whole tree compiled: a failure leaves the model
  exactly as it was.  ``in_place=False`` leaves the model untouched and returns
  a compiled model that *shares* its parameters and buffers, instead of a deep
  copy of everything.
- Errors are torchstitch's (:class:`torchstitch.StitchError` subclasses naming
  the module path, the strategy and who claimed it).  Where e3nn raises
  ``NotImplementedError`` for unsupported modules, the error here is a
  :class:`torchstitch.UnsupportedModuleError`, which is one.
- A module claimed ``"unsupported"`` that sits outside every compiled region is
  left in Python (torchstitch's rule) rather than failing the call; only the
  module passed to :func:`compile` itself, or one inside a compiled region,
  raises.
- Traced modules are checked against eager on every tracing input by the engine
  (one trace each), instead of by torch's re-tracing trace check.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch

from torchstitch import TorchstitchWarning, TracingInputsError, UnsupportedModuleError
from torchstitch import compile as _ts_compile
from torchstitch import compile_mode as _ts_compile_mode
from torchstitch import get_compile_mode as _ts_get_compile_mode
from torchstitch import script as _ts_script
from torchstitch import trace as _ts_trace
from torchstitch import trace_module as _ts_trace_module
from torchstitch.plugins.toolkit import (
    TracingInputs,
    cast_tensors,
    decorator_claim,
    is_known_compile_mode,
    known_compile_modes,
    resolve_tracing_inputs,
)

from . import _UNSET, E3NN_MODE_ATTR

try:
    import e3nn
    import e3nn.util.jit as _e3nn_jit
except ImportError as exc:  # pragma: no cover - exercised only without e3nn
    raise ImportError(
        "torchstitch.plugins.e3nn.jit is the drop-in for e3nn.util.jit and needs e3nn "
        "(pip install 'torchstitch[e3nn]')"
    ) from exc

__all__ = [
    "compile_mode",
    "get_compile_mode",
    "compile",
    "get_tracing_inputs",
    "trace_module",
    "trace",
    "script",
    "TracingInputsInferenceError",
]


class TracingInputsInferenceError(TracingInputsError, ValueError):
    """No tracing inputs could be made for a module.

    Also a :class:`ValueError`, which is what ``e3nn.util.jit.get_tracing_inputs``
    raises when it cannot infer inputs (``e3nn.util.test.assert_auto_jitable``
    catches that).
    """


def compile_mode(mode: str | None):
    """Class decorator: compile every instance of the class with strategy ``mode``.

    torchstitch's :func:`torchstitch.compile_mode` under e3nn's name: the mode is
    read by torchstitch (kind ``decorator``, which beats e3nn's own
    ``__e3nn_compile_mode__`` attribute) and by :func:`get_compile_mode` here.
    ``e3nn.util.jit.get_compile_mode`` does not see it.

    :param mode: ``"script"``, ``"trace"``, ``"unsupported"``, ``None``, or the
        name of a strategy a torchstitch plugin registers.
    :raises ValueError: for any other mode, as e3nn does (the message lists the
        valid ones).
    :raises TypeError: when the decorated object is not an ``nn.Module`` subclass.
    """
    if not is_known_compile_mode(mode):
        valid = known_compile_modes()
        raise ValueError(f"Invalid compile mode {mode!r}; valid modes: {', '.join(map(repr, valid))}, None")
    return _ts_compile_mode(mode)


def get_compile_mode(mod: torch.nn.Module) -> str | None:
    """Get the compilation mode of a module.

    The first of: torchstitch's mode (:func:`compile_mode` here or
    :func:`torchstitch.set_compile_mode`), e3nn's ``__e3nn_compile_mode__`` (on
    the instance, else the class), ``"script"`` for a ``torch.fx.GraphModule``
    (e3nn's generated code), else ``None``.  Plugins' other claims and the
    caller's rules show in :func:`torchstitch.plan`, not here.

    :param mod: the module.
    :returns: ``"script"``, ``"trace"``, ``"unsupported"``, a plugin strategy's
        name, or ``None`` when nothing set a mode.
    """
    mode = _ts_get_compile_mode(mod)
    if mode is not None:
        return mode
    mode = mod.__dict__.get(E3NN_MODE_ATTR, _UNSET)
    if mode is _UNSET:
        # read through the type: a miss on the instance goes through nn.Module.__getattr__
        mode = getattr(type(mod), E3NN_MODE_ATTR, None)
    if mode is None and isinstance(mod, torch.fx.GraphModule):
        mode = "script"
    return mode


def compile(
    mod: torch.nn.Module,
    n_trace_checks: int = 1,
    script_options: dict | None = None,
    trace_options: dict | None = None,
    in_place: bool = True,
    recurse: bool = True,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> torch.nn.Module:
    """Recursively compile a module and all submodules according to their compile modes.

    (Sub)modules without a mode are compiled as part of their nearest compiled
    ancestor, or left as they are.  A module whose mode is ``"script"`` is
    scripted after its own children were compiled; one whose mode is
    ``"trace"`` is traced on tracing inputs from, in order: the module's
    ``_make_tracing_inputs(n)``, then its ``irreps_in`` (see
    :func:`get_tracing_inputs`).

    :param mod: the module to compile.
    :param n_trace_checks: how many distinct tracing inputs to ask for when
        tracing a module; the traced module is compared with eager on each.
        Must be at least 1.
    :param script_options: extra keyword arguments for ``torch.jit.script``.
    :param trace_options: extra keyword arguments for ``torch.jit.trace_module``.
    :param in_place: put the compiled submodules into ``mod``'s own modules
        (once everything compiled; a failure leaves ``mod`` as it was); if
        false, ``mod`` is left untouched and the result shares its tensors.
    :param recurse: compile submodules that have a mode of their own before
        their parent; if false only ``mod``'s own mode counts.
    :param cache_dir: torchstitch's compile cache (docs/cache.md); ``None``:
        ``$TORCHSTITCH_CACHE_DIR``, else none.
    :returns: the compiled module (``mod`` itself when ``mod`` has no mode).
    :raises torchstitch.UnsupportedModuleError: (a ``NotImplementedError``) when
        ``mod``'s own mode is ``"unsupported"``, or an unsupported module sits
        inside a compiled one; nothing was compiled.
    :raises torchstitch.TracingInputsError: when a module to trace has no
        tracing inputs.
    :raises torchstitch.NodeCompileError: when TorchScript fails on a module
        (the torch error is chained).
    :raises torchstitch.VerificationError: when a traced module differs from
        eager on one of its tracing inputs.
    """
    if get_compile_mode(mod) == "unsupported":
        raise UnsupportedModuleError(
            f"{type(mod).__name__} does not support TorchScript compilation",
            path="",
            strategy="unsupported",
            claimant=_mode_claimant(mod),
        )
    return _ts_compile(
        mod,
        in_place=in_place,
        recurse=recurse,
        n_trace_checks=n_trace_checks,
        script_options=script_options,
        trace_options=trace_options,
        cache_dir=cache_dir,
    )


def script(
    mod: torch.nn.Module, in_place: bool = True, *, cache_dir: str | os.PathLike[str] | None = None
) -> torch.nn.Module:
    """Script a module.

    Like ``torch.jit.script``, but first recursively compiles ``mod``'s
    submodules according to their compile modes (see :func:`compile`).  ``mod``
    is scripted whatever its own mode says; a mode other than ``"script"``
    gives a warning, as in e3nn.

    :param mod: the module to script.
    :param in_place: as for :func:`compile`.
    :param cache_dir: as for :func:`compile`.
    :returns: the scripted module.
    """
    _warn_if_mode_differs(mod, "script")
    return _ts_script(mod, in_place=in_place, cache_dir=cache_dir)


def trace_module(
    mod: torch.nn.Module,
    inputs: dict | None = None,
    check_inputs: list | None = None,
    in_place: bool = True,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> torch.nn.Module:
    """Trace a module.

    The signature of ``torch.jit.trace_module``, but first recursively compiles
    ``mod``'s submodules according to their compile modes (see :func:`compile`).
    ``mod`` is traced whatever its own mode says; a mode other than ``"trace"``
    gives a warning, as in e3nn.

    :param mod: the module to trace.
    :param inputs: ``{method_name: args_tuple}`` to trace with; if ``None``,
        from ``mod``'s ``_make_tracing_inputs`` or its ``irreps_in``.
    :param check_inputs: more ``{method_name: args_tuple}`` dicts; the traced
        module must match eager on each (used only with ``inputs``).
    :param in_place: as for :func:`compile`.
    :param cache_dir: as for :func:`compile`.
    :returns: the traced module.
    """
    _warn_if_mode_differs(mod, "trace")
    return _ts_trace_module(mod, inputs, check_inputs, in_place=in_place, cache_dir=cache_dir)


def trace(
    mod: torch.nn.Module,
    example_inputs: tuple | None = None,
    check_inputs: list | None = None,
    in_place: bool = True,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> torch.nn.Module:
    """Trace a module.

    The signature of ``torch.jit.trace``, but first recursively compiles
    ``mod``'s submodules according to their compile modes (see :func:`compile`).

    :param mod: the module to trace.
    :param example_inputs: the arguments of ``forward`` to trace with; if
        ``None``, from ``mod``'s ``_make_tracing_inputs`` or its ``irreps_in``.
    :param check_inputs: more argument tuples; the traced module must match
        eager on each (used only with ``example_inputs``).
    :param in_place: as for :func:`compile`.
    :param cache_dir: as for :func:`compile`.
    :returns: the traced module.
    """
    _warn_if_mode_differs(mod, "trace")
    return _ts_trace(mod, example_inputs, check_inputs, in_place=in_place, cache_dir=cache_dir)


def get_tracing_inputs(
    mod: torch.nn.Module,
    n: int = 1,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> TracingInputs:
    """Get random tracing inputs for ``mod``.

    Asks torchstitch's tracing-input providers without caller or recorded
    inputs: ``mod._make_tracing_inputs(n)`` if it has one, else plugins (e3nn's
    random inputs from ``irreps_in``, or ``irreps_in1``/``irreps_in2``).

    :param mod: the module.
    :param n: a hint for how many inputs are wanted; usually ``n`` are
        returned, but a module's ``_make_tracing_inputs`` may return fewer.
    :param device: the device of the inputs; if ``None``, that of ``mod``'s
        first parameter or buffer (else the CPU).
    :param dtype: the dtype of the floating-point inputs; if ``None``, that of
        ``mod``'s first floating-point parameter or buffer (else the default dtype).
    :returns: tracing inputs in the format of ``torch.jit.trace_module``: a list
        of dicts mapping method names such as ``"forward"`` to argument tuples.
    :raises TracingInputsInferenceError: (a :class:`torchstitch.TracingInputsError`
        and a ``ValueError``, as in e3nn) when no provider can make inputs.
    :raises torchstitch.TracingInputsError: when ``_make_tracing_inputs``
        returns something malformed.
    """
    found = resolve_tracing_inputs(mod, n)
    if found.source is None:
        raise TracingInputsInferenceError(
            f"cannot make tracing inputs for {type(mod).__name__} (asked, in order: "
            f"{', '.join(found.asked)}): define _make_tracing_inputs(n) on it, give it "
            "irreps_in (e3nn Irreps), or pass the inputs explicitly",
            path="",
        )
    inputs = found.inputs
    if device is None:
        device = _module_device(mod)
    if dtype is None:
        dtype = _module_floating_dtype(mod)
    return [{method: cast_tensors(args, device, dtype) for method, args in call.items()} for call in inputs]


# e3nn 0.6.0 maps the legacy ``jit_script_fx`` flag onto ``jit_mode``, and its own
# ``disable_e3nn_codegen`` restores only ``jit_script_fx``: from torch 2.10 on, where
# ``jit_mode`` defaults to "eager", leaving it switches ``jit_mode`` to "script" (and
# it restores nothing if the block raises).  Ours restores both flags exactly.
if hasattr(_e3nn_jit, "disable_e3nn_codegen"):

    @contextlib.contextmanager
    def disable_e3nn_codegen() -> Iterator[None]:
        """Context manager that disables the legacy PyTorch code generation used in e3nn.

        Modules built inside the block keep their generated code as plain
        ``torch.fx`` modules (e3nn's ``jit_script_fx=False``); on exit e3nn's
        optimization defaults are restored exactly, also when the block raises.
        """
        before = e3nn.get_optimization_defaults()
        e3nn.set_optimization_defaults(jit_script_fx=False)
        try:
            yield
        finally:
            restore = {k: before[k] for k in ("jit_script_fx", "jit_mode") if k in before}
            # jit_script_fx first: setting it rewrites jit_mode, which is then put back
            e3nn.set_optimization_defaults(**restore)

    __all__.append("disable_e3nn_codegen")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _mode_claimant(mod: torch.nn.Module) -> str:
    """Who set ``mod``'s mode, as the plan would name it."""
    claim = decorator_claim(mod)
    return claim.claimant if claim is not None else "plugin e3nn"


def _warn_if_mode_differs(mod: torch.nn.Module, forced: str) -> None:
    mode = get_compile_mode(mod)
    if mode is not None and mode != forced:
        warnings.warn(
            f"Trying to {forced} a module of type {type(mod).__name__} marked with compile mode "
            f"{mode!r}, expect errors!",
            TorchstitchWarning,
            stacklevel=3,
        )


def _module_device(mod: torch.nn.Module) -> torch.device:
    for tensor in mod.parameters():
        return tensor.device
    for buffer in mod.buffers():
        return buffer.device
    return torch.device("cpu")


def _module_floating_dtype(mod: torch.nn.Module) -> torch.dtype:
    for tensors in (mod.parameters(), mod.buffers()):
        for tensor in tensors:
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.get_default_dtype()
