"""The caller's state: the buffers of a model as a compile call found them, restored
before every run torchstitch makes and when the call ends."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeGuard

import torch

__all__ = ["CallerState", "preserved_state", "uninitialized_lazy"]

log = logging.getLogger(__name__)

#: buffer name -> tensor (``None``: registered as ``None``), as found on one module
Bindings = dict[str, "torch.Tensor | None"]


def _compiled(module: torch.nn.Module) -> bool:
    """A compiled module (TorchScript's) whose ``_buffers`` is a view of its own storage,
    not the dict ``nn.Module`` keeps."""
    return not isinstance(module._buffers, dict)


def _bindings(module: torch.nn.Module) -> Bindings:
    if _compiled(module):
        return dict(module.named_buffers(recurse=False))
    return dict(module._buffers)


def _rebind(module: torch.nn.Module, saved: Bindings) -> bool:
    """Put ``saved``'s tensor objects back under their names; whether anything was rebound."""
    current = _bindings(module)
    if current.keys() == saved.keys() and all(current[k] is v for k, v in saved.items()):
        return False
    if _compiled(module):
        # a scripted forward can rebind a buffer (``self.ema = ...``), never add or drop one
        for name, tensor in saved.items():
            if current.get(name) is not tensor:
                setattr(module, name, tensor)
    else:
        module._buffers.clear()
        module._buffers.update(saved)
    return True


class CallerState:
    """The buffers of a module tree as the caller left them.

    A forward changes buffers in place (BatchNorm's running statistics, a step
    counter) or rebinds them (``self.ema = 0.9 * self.ema + 0.1 * x``), and may
    register new ones.  torchstitch runs the caller's modules (the recording run,
    eager verification, :func:`~torchstitch.locate`) and compiled ones that share
    their tensors (tracing, verification).  :meth:`restore` puts each buffer's
    original tensor object back under its name (dropping buffers a forward added)
    and copies the original values into it, so every run starts from the caller's
    state and the call ends in it.

    Parameters are not copied (that would double the model's memory): a forward
    that changes its parameters in place is not undone.

    :param root: the caller's model.
    """

    def __init__(self, root: torch.nn.Module) -> None:
        #: id(caller's module) -> (the module, its bindings); every module of the tree
        self._saved: dict[int, tuple[torch.nn.Module, Bindings]] = {}
        #: id(buffer) -> (the buffer, a copy of its values)
        self._values: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        #: id(caller's module) -> id(module) -> (a module restored along with it, its bindings)
        self._followers: dict[int, dict[int, tuple[torch.nn.Module, Bindings]]] = {}
        #: ids of the modules in ``_followers``
        self._followed: set[int] = set()
        for module in root.modules():
            bindings = _bindings(module)
            self._saved[id(module)] = (module, bindings)
            for tensor in bindings.values():
                if _has_values(tensor) and id(tensor) not in self._values:
                    self._values[id(tensor)] = (tensor, tensor.detach().clone())

    def add_shell(self, original: torch.nn.Module, shell: torch.nn.Module) -> None:
        """Restore ``shell`` (sharing ``original``'s buffers) to ``original``'s bindings."""
        self._follow(original, shell, self._saved[id(original)][1])

    def add_compiled(self, original: torch.nn.Module, compiled: torch.nn.Module) -> None:
        """Restore ``compiled`` (a strategy's result for ``original``) and the modules in it
        that are not already restored (shells) to their bindings as of now.

        A scripted forward that rebinds a buffer rebinds it in the compiled module,
        which holds the caller's tensors but its own names for them.  Call it right
        after the strategy returned: its result keeps the buffers it was returned with
        (a strategy may rebind them on purpose), the shells in it the caller's.
        """
        for module in compiled.modules():
            if module is compiled or id(module) not in self._followed:
                self._follow(original, module, _bindings(module))

    def _follow(self, original: torch.nn.Module, module: torch.nn.Module, bindings: Bindings) -> None:
        self._followers.setdefault(id(original), {})[id(module)] = (module, bindings)
        self._followed.add(id(module))

    def changed(self) -> set[int]:
        """ids of the caller's modules whose buffers differ from the saved state (rebound,
        added, dropped, or different values)."""
        out = set()
        for key, (module, saved) in self._saved.items():
            current = _bindings(module)
            if current.keys() != saved.keys() or any(
                current[name] is not tensor
                or (id(tensor) in self._values and not _same_values(*self._values[id(tensor)]))
                for name, tensor in saved.items()
            ):
                out.add(key)
        return out

    def restore(self, module: torch.nn.Module | None = None) -> None:
        """Restore the saved state of ``module``'s subtree (``None``: the whole tree), and of the
        shells and compiled modules made from it.

        :param module: one of the caller's modules.
        """
        if module is None:
            originals = [m for m, _ in self._saved.values()]
        else:
            originals = [m for m in module.modules() if id(m) in self._saved]
        to_copy: set[int] = set()
        for original in originals:
            saved = self._saved[id(original)][1]
            if _rebind(original, saved):
                log.debug("restored the buffers of %s rebound by a forward", type(original).__name__)
            for follower, bindings in self._followers.get(id(original), {}).values():
                _rebind(follower, bindings)
            to_copy.update(id(t) for t in saved.values() if id(t) in self._values)
        with torch.no_grad():
            for key in to_copy:
                tensor, value = self._values[key]
                if tensor.shape != value.shape:
                    tensor.resize_(value.shape)
                tensor.copy_(value)


def _has_values(tensor: torch.Tensor | None) -> TypeGuard[torch.Tensor]:
    """Whether ``tensor`` holds values to save (not ``None``, on the meta device or uninitialised)."""
    return tensor is not None and not tensor.is_meta and not torch.nn.parameter.is_lazy(tensor)


def _same_values(tensor: torch.Tensor, value: torch.Tensor) -> bool:
    return tensor.shape == value.shape and bool(torch.equal(tensor.detach(), value))


@contextmanager
def preserved_state(root: torch.nn.Module) -> Iterator[CallerState]:
    """The caller's state of ``root``, restored on exit (after a failure too)."""
    state = CallerState(root)
    try:
        yield state
    finally:
        state.restore()


def uninitialized_lazy(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a lazy module (``nn.LazyLinear``, ...) whose parameters do not exist yet."""
    lazy = torch.nn.modules.lazy.LazyModuleMixin
    return isinstance(module, lazy) and module.has_uninitialized_params()
