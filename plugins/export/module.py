"""What an ``export`` node is stitched back as: a module wrapping its ``ExportedProgram``."""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils import _pytree as pytree

from .guards import InputSpec

__all__ = ["ExportedModule", "AOTIModule"]

log = logging.getLogger(__name__)


class ExportedModule(torch.nn.Module):
    """A compiled ``export`` node: runs ``program.module()`` (the unlifted, callable form).

    Each call is first checked against what the program was exported for
    (:attr:`input_spec`): an input that does not fit is an
    :class:`~torchstitch.InputSpecError` naming it, not torch's bare ``AssertionError``.

    :param program: the ``torch.export.ExportedProgram`` of the node.
    :param source: the eager module it was exported from (the engine's shell); kept,
        unregistered, so that an ``export`` ancestor re-exports the eager code instead
        of tracing through the unlifted graph. ``None`` after :func:`torchstitch.load`.
    :param path: the node's dotted path, for messages.
    :param input_names: ``forward``'s argument names, for messages; by default the
        source's, else the program's own.
    """

    source: torch.nn.Module | None  # set through ``__dict__`` (see ``__init__``)

    def __init__(
        self,
        program: torch.export.ExportedProgram,
        *,
        source: torch.nn.Module | None = None,
        path: str = "",
        input_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        #: the ExportedProgram (what ``torch.export.save`` and AOTInductor take)
        self.program = program
        #: ``program.module()``: the callable form, built once
        self.unlifted = program.module()
        self.path = path
        # in __dict__, not _modules: not a submodule (no duplicate parameters, not saved)
        self.__dict__["source"] = source
        if input_names is None and source is not None:
            input_names = forward_argument_names(source)
        #: what a call must fit; ``None`` when the program could not be read (calls go unchecked)
        self.input_spec = _read_input_spec(program, input_names, path)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        spec = self.input_spec
        if spec is None or _tracing():
            return self.unlifted(*args, **kwargs)
        args, kwargs, _ = spec.check(args, kwargs)
        try:
            return self.unlifted(*args, **kwargs)
        except AssertionError as exc:  # a guard torch checks in the graph (a relation of sizes)
            error = spec.guard_failure(exc)
            if error is None:
                raise
            raise error from exc

    def train(self, mode: bool = True) -> ExportedModule:
        # ``program.module()`` refuses train()/eval(): the mode was fixed at export time
        self.training = mode
        return self

    def extra_repr(self) -> str:
        return f"path={self.path!r}"


class AOTIModule(torch.nn.Module):
    """An AOTInductor package loaded by :func:`torchstitch.load` (format ``aoti``).

    Each call is checked against :attr:`input_spec` (the package was compiled for
    those dtypes, devices and sizes, and runs whatever it is given), and its tensors
    are made contiguous: the compiled kernels index by the strides they were built
    for, so a transposed view would be read wrongly.

    :param runner: what ``torch._inductor.aoti_load_package`` returned.
    :param metadata: the package's metadata (``runner.get_metadata()``).
    :param input_spec: what a call must fit; ``None`` (a package torchstitch did not
        make) only makes the inputs contiguous.
    """

    def __init__(self, runner: Any, metadata: dict[str, str], input_spec: InputSpec | None = None) -> None:
        super().__init__()
        # torch's loader unpacks the package into a temporary folder that only its destructor
        # removes, and at interpreter exit it is not always destroyed (not while a TorchScript
        # module is alive too: the folder is then left behind, a package's size per process).
        # Dropping the one reference at exit, before the interpreter tears down, destroys it.
        holder = [runner]
        self.__dict__["_runner_holder"] = holder
        weakref.finalize(self, holder.clear)
        self.metadata = dict(metadata)
        self.input_spec = input_spec
        loader = getattr(runner, "loader", None)
        # the package's output structure, read once (the runner reads it on every call)
        self._out_spec = None if loader is None else pytree.treespec_loads(loader.get_call_spec()[1])
        self._outputs = None if self._out_spec is None else _output_builder(self._out_spec)

    @property
    def runner(self) -> Any:
        """What ``torch._inductor.aoti_load_package`` returned (``runner.loader``: the C++ loader)."""
        return self.__dict__["_runner_holder"][0]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.input_spec is None or self._outputs is None:
            args, kwargs = pytree.tree_map_only(torch.Tensor, _contiguous, (args, kwargs))
            return self.runner(*args, **kwargs)
        _, _, flat = self.input_spec.check(args, kwargs)
        tensors = [_contiguous(value) for value in flat if isinstance(value, torch.Tensor)]
        return self._outputs(self.runner.loader.boxed_run(tensors))


def _output_builder(spec: pytree.TreeSpec) -> Any:
    """What turns the package's flat outputs into the model's: a dict, tuple or list of
    tensors (what atomistic models return) built directly, anything else by pytree, whose
    unflatten walks the structure in Python on every call (a third of the per-call time
    of a small NequIP model's package)."""
    if spec.num_children and all(child.is_leaf() for child in spec.children()):
        if spec.type is dict:
            keys = list(spec.context)
            return lambda flat: dict(zip(keys, flat))
        if spec.type in (tuple, list):
            return spec.type
    return lambda flat: pytree.tree_unflatten(flat, spec)


def forward_argument_names(module: torch.nn.Module) -> list[str] | None:
    """The names of ``module.forward``'s arguments (``*args``/``**kwargs`` excluded)."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _read_input_spec(
    program: torch.export.ExportedProgram, names: Sequence[str] | None, path: str
) -> InputSpec | None:
    try:
        return InputSpec.from_program(program, names=names, where=path)
    except Exception:  # an unusual program must still run; it only goes unchecked
        log.warning(
            "%s: the exported inputs could not be read; calls will not be checked",
            path or "<root>",
            exc_info=True,
        )
        return None


def _tracing() -> bool:
    """Whether the call is being traced (an export or torch.compile of a parent): the inputs
    are then symbolic, and torch checks them itself."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _contiguous(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous()
