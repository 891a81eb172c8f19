"""Size-independent e3nn code for the export family (``torch.export``, ``make_fx``).

TorchScript runs sizes as plain integers: a scripted function or module called while
``torch.export`` or ``make_fx(tracing_mode="symbolic")`` traces the model turns every
symbolic size it reads into the example's number, so the export is fixed to the traced
number of atoms and edges ("Constraints violated (atoms, edges)" when they were declared
dynamic).  e3nn puts TorchScript inside its modules in three ways:

- a module-level ``@torch.jit.script`` function called from ``forward``: e3nn 0.4.4's
  ``SphericalHarmonics.forward`` calls ``_spherical_harmonics(self._lmax, x[..., 0], ...)``
  (``e3nn/o3/_spherical_harmonics.py`` line 82).  Its forward traces symbolically, but
  forces differentiate it, and TorchScript's autograd of the function records sizes as
  integers: under ``make_fx`` the guard ``Eq(edges, 22)`` is added at that call;
- the same function scripted into an instance attribute: e3nn >= 0.5 under
  ``jit_mode="script"`` (``self.sph_func = torch.jit.script(_spherical_harmonics)``);
- generated ``fx`` code scripted at construction (``CodeGenMixin._codegen_register``,
  always in e3nn 0.4.4, under ``jit_mode="script"`` later): ``o3.Linear``'s
  ``_compiled_main`` reads ``torch.size(x)[0]`` (the guard ``Eq(atoms, 6)`` comes from
  MACE's first ``o3.Linear``), ``TensorProduct``'s ``_compiled_main_left_right`` too.

For a node the export family compiles, :func:`size_independent` gives the export a private
copy of the tree in which the first two call the Python function TorchScript compiled
(``ScriptFunction._torchdynamo_inline``, the function as written) and the generated code is
generated again by e3nn's own code generator, as an ``fx.GraphModule`` (checked against
the scripted code on random inputs before it is used).  The caller's modules are not
changed, and the TorchScript family never sees the copy: its result stays bit-identical to
``e3nn.util.jit``.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch

from torchstitch.plugins.toolkit import make_shell

log = logging.getLogger(__name__)

__all__ = ["size_independent"]

#: generated-code attributes :func:`_regenerate` knows how to make again, by e3nn class name
REGENERATED = {"Linear": ("_compiled_main",), "TensorProduct": ("_compiled_main_left_right",)}


def size_independent(module: torch.nn.Module, scratch: dict[Any, Any]) -> torch.nn.Module | None:
    """``module`` with every e3nn piece below it that TorchScript runs replaced by Python code.

    Shells are made along the way (the caller's modules are never changed); ``None`` when
    nothing needed replacing.

    :param module: the engine's shell of the node the export family compiles.
    :param scratch: the compile call's memo (rewritten classes, regenerated code).
    """
    replaced: dict[str, torch.nn.Module] = {}
    for name, child in module._modules.items():
        if child is None or isinstance(child, torch.jit.ScriptModule):
            continue  # generated code is replaced by its owner, below
        rewritten = size_independent(child, scratch)
        if rewritten is not None:
            replaced[name] = rewritten
    codegen = _regenerated_code(module, scratch)
    replaced.update(codegen)
    subclass = _python_forward_class(type(module), scratch)
    functions = _python_attributes(module)
    if not (replaced or subclass or functions):
        return None
    shell = make_shell(module)
    shell._modules.update(replaced)
    shell.__dict__.update(functions)
    if subclass is not None:
        shell.__class__ = subclass
    if codegen or subclass or functions:
        log.debug("e3nn: %s runs Python code in the export", type(module).__qualname__)
    return shell


# -- scripted functions ---------------------------------------------------------------


def _python_function(value: Any) -> Callable[..., Any] | None:
    """The Python function a ``torch.jit.script``-ed function was compiled from, if known."""
    if isinstance(value, torch.jit.ScriptFunction):
        return getattr(value, "_torchdynamo_inline", None)
    return None


def _python_attributes(module: torch.nn.Module) -> dict[str, Callable[..., Any]]:
    """Instance attributes holding scripted functions, as their Python originals."""
    found = {}
    for name, value in module.__dict__.items():
        original = _python_function(value)
        if original is not None:
            found[name] = original
    return found


def _python_forward_class(cls: type, scratch: dict[Any, Any]) -> type | None:
    """A subclass of ``cls`` whose ``forward`` calls the Python originals of the scripted
    functions its code names as globals; ``None`` if it names none (or is not e3nn's)."""
    key = ("e3nn", "python forward", cls)
    if key not in scratch:
        scratch[key] = _make_python_forward_class(cls)
    return scratch[key]


def _make_python_forward_class(cls: type) -> type | None:
    forward = cls.__dict__.get("forward")
    if not cls.__module__.startswith("e3nn.") or not isinstance(forward, types.FunctionType):
        return None
    scripted = {
        name: original
        for name in forward.__code__.co_names
        if (original := _python_function(forward.__globals__.get(name))) is not None
    }
    if not scripted:
        return None
    # the same code object, so the same lines and behaviour; only the globals differ
    namespace = {**forward.__globals__, **scripted}
    function = types.FunctionType(
        forward.__code__, namespace, forward.__name__, forward.__defaults__, forward.__closure__
    )
    function.__kwdefaults__ = forward.__kwdefaults__
    function.__qualname__ = forward.__qualname__
    log.debug("e3nn: %s.forward calls %s in Python for export", cls.__qualname__, ", ".join(sorted(scripted)))
    body = {"forward": function, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return type(cls.__name__, (cls,), body)


# -- generated code -------------------------------------------------------------------


def _regenerated_code(module: torch.nn.Module, scratch: dict[Any, Any]) -> dict[str, torch.nn.Module]:
    """The scripted generated code of an e3nn module, generated again as ``fx`` code."""
    kind = _e3nn_base(type(module))
    names = REGENERATED.get(kind or "", ())
    scripted = [n for n in names if isinstance(module._modules.get(n), torch.jit.ScriptModule)]
    if not scripted:
        return {}
    # identical scripted code (a network's many copies of one kernel): identical fx code,
    # which holds no weights (they are arguments), so one regeneration serves them all
    key = ("e3nn", "regenerated", type(module), tuple(_scripted_code(module, n) for n in scripted))
    if key not in scratch:
        scratch[key] = _regenerate(module, scripted)
    return scratch[key]


def _scripted_code(module: torch.nn.Module, name: str) -> str:
    child = module._modules[name]
    assert isinstance(child, torch.jit.ScriptModule)
    return child.code


def _e3nn_base(cls: type) -> str | None:
    """Which of e3nn's classes in :data:`REGENERATED` ``cls`` is or derives from
    (``FullyConnectedTensorProduct`` is a ``TensorProduct``)."""
    for base in cls.__mro__:
        if base.__name__ in REGENERATED and base.__module__.startswith("e3nn."):
            return base.__name__
    return None


def _regenerate(module: torch.nn.Module, names: list[str]) -> Mapping[str, torch.nn.Module]:
    try:
        code = _codegen(module)
    except Exception as exc:  # a signature this e3nn does not have: leave the scripted code
        log.debug("e3nn: cannot regenerate the code of %s: %s", type(module).__qualname__, exc)
        return {}
    code = {name: graph for name, graph in code.items() if name in names}
    if not _same_results(module, code):
        log.debug("e3nn: regenerated code of %s differs from its scripted code", type(module).__qualname__)
        return {}
    return code


def _codegen(module: Any) -> dict[str, torch.fx.GraphModule]:
    """The ``fx`` code e3nn's constructor generated for ``module`` (before scripting it)."""
    if _e3nn_base(type(module)) == "Linear":
        from e3nn.o3._linear import _codegen_linear

        # f_in/f_out are not kept; internal weights of shape (f_in, f_out, numel) tell them
        f_in, f_out = tuple(module.weight.shape[:2]) if module.weight.dim() == 3 else (None, None)
        graph, _, _ = _codegen_linear(
            module.irreps_in,
            module.irreps_out,
            module.instructions,
            f_in,
            f_out,
            shared_weights=module.shared_weights,
            optimize_einsums=module._optimize_einsums,
        )
        return {"_compiled_main": graph}
    from e3nn.o3._tensor_product._codegen import codegen_tensor_product_left_right

    graph = codegen_tensor_product_left_right(
        module.irreps_in1,
        module.irreps_in2,
        module.irreps_out,
        module.instructions,
        module.shared_weights,
        module._specialized_code,
        module._optimize_einsums,
    )
    return {"_compiled_main_left_right": graph}


def _same_results(module: Any, code: dict[str, torch.fx.GraphModule]) -> bool:
    """Whether ``module`` computes the same with ``code`` as with its scripted code (2 samples)."""
    if not code:
        return False
    trial = make_shell(module)
    trial._modules.update(code)
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.get_default_dtype())
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    batch = 2

    def external(numel: int) -> tuple[torch.Tensor, ...]:
        # weights (biases) the caller passes: shared by the batch or one set per sample
        if module.internal_weights:
            return ()
        return (randn(numel) if module.shared_weights else randn(batch, numel),)

    weights = external(module.weight_numel)
    if _e3nn_base(type(module)) == "Linear":
        if module.bias_numel:
            weights += external(module.bias_numel)
        args = (randn(batch, module.irreps_in.dim), *weights)
    else:
        args = (randn(batch, module.irreps_in1.dim), randn(batch, module.irreps_in2.dim), *weights)
    with torch.no_grad():
        return bool(torch.allclose(trial(*args), module(*args)))
