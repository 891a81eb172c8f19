"""e3nn's spherical harmonics, scripted for the one ``lmax`` a module uses.

e3nn >= 0.5 calls ``self.sph_func(self._lmax, x, y, z)`` in each ``o3.SphericalHarmonics``:
``_spherical_harmonics``, one function of about 1,750 lines with a branch for every
``lmax`` up to 11, of which a module runs one (scripted at construction under
``jit_mode="script"``, else scripted with the module).  TorchScript keeps every branch:
scripting the module compiles them all (about 0.26 s), a saved model carries them all and
``torch.jit.load`` compiles them all again (0.25-0.36 s per load here: most of the time a
compile-cache hit takes, and a good part of what a libtorch host spends loading a NequIP
model).

e3nn 0.4 (MACE's) calls the module-level ``_spherical_harmonics``, scripted at import,
from ``forward``: a shorter function (about 270 lines), but ``torch.jit.load`` of one
``o3.SphericalHarmonics`` still takes about 0.17 s for it.

For a node the TorchScript family compiles, :func:`specialized_spherical_harmonics`
gives the engine a shell that calls the same function cut to the module's ``lmax``: the
statements before that branch and the branch's own ``return``, the other branches'
early returns dropped.  e3nn >= 0.5: the shell's ``sph_func`` is the cut function;
e3nn 0.4: the shell's class is a subclass whose ``forward`` is e3nn's, compiled with the
cut function in place of the module-level one (TorchScript resolves a method's globals
through the function's ``__globals__``).  The arithmetic is e3nn's, statement for statement, so
the results are bit-identical (checked on random inputs before it is used); loading it
takes about 0.016 s.  The caller's module is not changed.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import logging
import sys
import types
from typing import Any

import torch

from torchstitch.plugins.toolkit import make_shell

log = logging.getLogger(__name__)

__all__ = ["specialized_spherical_harmonics"]

#: the name of e3nn's function, in the module that defines ``SphericalHarmonics``
FUNCTION = "_spherical_harmonics"


def specialized_spherical_harmonics(
    module: torch.nn.Module, scratch: dict[Any, Any]
) -> torch.nn.Module | None:
    """A shell of ``module`` whose ``sph_func`` is scripted for its ``lmax`` only; ``None``
    for any other module, or where the function cannot be cut (it is then scripted whole).

    :param module: the engine's shell of a node the TorchScript family compiles.
    :param scratch: the compile call's memo (one cut function per ``lmax``).
    """
    function, lmax, called_as = _scripted_spherical_harmonics(module)
    if function is None or lmax is None:
        return None
    cls = type(module)
    key = ("e3nn", "spherical_harmonics", cls.__module__, lmax)
    if key not in scratch:
        scratch[key] = _specialize(cls.__module__, lmax, function)
    specialized = scratch[key]
    if specialized is None:
        return None
    shell = make_shell(module)
    if called_as == "attribute":
        shell.sph_func = specialized
        return shell
    class_key = ("e3nn", "spherical_harmonics class", cls, lmax)
    if class_key not in scratch:
        scratch[class_key] = _calling(cls, specialized)
    shell.__class__ = scratch[class_key]  # the engine's shell, never the caller's module
    return shell


def _scripted_spherical_harmonics(module: torch.nn.Module) -> tuple[Any, int | None, str]:
    """e3nn's scripted function in ``module``, the ``lmax`` it is called with, and how
    ``forward`` calls it: ``"attribute"`` (``self.sph_func``, e3nn >= 0.5) or ``"global"``
    (the module-level function, e3nn 0.4); ``(None, None, "")`` for other modules."""
    cls = type(module)
    none: tuple[Any, int | None, str] = (None, None, "")
    if cls.__name__ != "SphericalHarmonics" or not cls.__module__.startswith("e3nn."):
        return none
    lmax = module.__dict__.get("_lmax")
    if not isinstance(lmax, int):
        return none
    if "sph_func" not in module.__dict__:
        function = vars(sys.modules[cls.__module__]).get(FUNCTION)
        forward = getattr(cls.forward, "__code__", None)
        calls_it = forward is not None and FUNCTION in forward.co_names
        if isinstance(function, torch.jit.ScriptFunction) and calls_it:
            return function, lmax, "global"
        return none
    function = module.__dict__["sph_func"]
    name: str | None
    if isinstance(function, torch.jit.ScriptFunction):
        name = function.qualified_name.rsplit(".", 1)[-1]
    else:  # jit_mode="eager" (e3nn 0.6's default): scripting the module scripts it whole
        name = (
            getattr(function, "__name__", None)
            if getattr(function, "__module__", None) == cls.__module__
            else None
        )
    return (function, lmax, "attribute") if name == FUNCTION else none


def _calling(cls: type[torch.nn.Module], specialized: Any) -> type[torch.nn.Module]:
    """A subclass of ``cls`` (same name) whose ``forward`` is ``cls``'s, with ``specialized``
    as the module-level function it calls."""
    forward = cls.forward
    scope = {**forward.__globals__, FUNCTION: specialized}
    rebound = types.FunctionType(
        forward.__code__, scope, forward.__name__, forward.__defaults__, forward.__closure__
    )
    rebound.__qualname__ = forward.__qualname__
    rebound.__annotations__ = dict(forward.__annotations__)
    namespace = {"forward": rebound, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return type(cls.__name__, (cls,), namespace)


def _specialize(module_name: str, lmax: int, original: Any) -> Any:
    """e3nn's function cut to ``lmax`` and scripted, if it gives the original's results."""
    try:
        namespace = vars(sys.modules[module_name])
        source = _cut_source(_source_from_definition(namespace[FUNCTION], module_name), lmax)
        if source is None:
            return None
        filename = f"<torchstitch: e3nn spherical harmonics, lmax={lmax}>"
        # TorchScript reads a function's source through linecache
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        local = dict(namespace)
        exec(compile(source, filename, "exec"), local)
        specialized = torch.jit.script(local[f"{FUNCTION}_lmax{lmax}"])
        if not _same_results(original, specialized, lmax):
            log.debug("e3nn spherical harmonics cut to lmax=%d differ from e3nn's: not used", lmax)
            return None
    except Exception:  # e3nn's code changed shape: script the whole function, as before
        log.debug("e3nn spherical harmonics: could not cut to lmax=%d", lmax, exc_info=True)
        return None
    log.debug("e3nn spherical harmonics: scripted for lmax=%d only", lmax)
    return specialized


def _source_from_definition(function: Any, module_name: str) -> str:
    """The source file from ``function``'s definition on: only the part up to the branch
    is parsed, and ``inspect.getsource`` would tokenize the whole function (half the cost).
    A function scripted at import (e3nn 0.4) keeps no Python code: its ``def`` line is
    looked up in its module's file."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    if code is not None:
        return "".join(linecache.getlines(code.co_filename)[code.co_firstlineno - 1 :])
    filename = inspect.getsourcefile(sys.modules[module_name])
    lines = linecache.getlines(filename) if filename else []
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {FUNCTION}("))
    return "".join(lines[start:])


def _cut_source(source: str, lmax: int) -> str | None:
    """The function's source up to its ``if lmax == {lmax}:`` branch, that branch's body
    unconditional, and the other ``if lmax == k:`` early returns dropped."""
    lines = source.splitlines(True)
    branch = next((i for i, line in enumerate(lines) if line.strip() == f"if lmax == {lmax}:"), None)
    if branch is None:
        return None
    indent = len(lines[branch]) - len(lines[branch].lstrip())
    end = branch + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    tree = ast.parse("".join(lines[:end]))
    (function,) = tree.body
    if not isinstance(function, ast.FunctionDef):
        return None
    body: list[ast.stmt] = []
    for statement in function.body:
        value = _lmax_test(statement)
        if value is None:
            body.append(statement)
        elif value == lmax and isinstance(statement, ast.If):
            body.extend(statement.body)
    if not body or not isinstance(body[-1], ast.Return):
        return None
    function.body = body
    function.decorator_list = []
    function.name = f"{FUNCTION}_lmax{lmax}"
    return ast.unparse(tree) + "\n"


def _lmax_test(statement: ast.stmt) -> int | None:
    """``k`` for a statement ``if lmax == k: ...`` (without ``else``), else ``None``."""
    if not isinstance(statement, ast.If) or statement.orelse:
        return None
    test = statement.test
    if (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "lmax"
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and isinstance(test.comparators[0], ast.Constant)
        and isinstance(test.comparators[0].value, int)
    ):
        return test.comparators[0].value
    return None


def _same_results(original: Any, specialized: Any, lmax: int) -> bool:
    """Whether both give the same bits on random inputs.  Run without TorchScript's graph
    optimizer: the arithmetic is what is compared, and a first optimized run of e3nn's whole
    function would cost more than everything else here."""
    generator = torch.Generator().manual_seed(0)
    x, y, z = (torch.randn(7, generator=generator, dtype=torch.float64) for _ in range(3))
    with torch.jit.optimized_execution(False):
        return torch.equal(original(lmax, x, y, z), specialized(lmax, x, y, z))
