"""Stitching: the one place that sets submodules.

Every Python module of the plan gets a *shell* (:func:`make_shell`), its children's
results are set on the shell, and a claimed node's shell is compiled; the
caller's modules are only written by :meth:`Stitcher.commit` (``in_place=True``),
once everything compiled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

from .ir import Node, Plan
from .state import CallerState

__all__ = ["Stitcher", "make_shell"]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=torch.nn.Module)


class Stitcher:
    """Shells and results of one compile call.

    :param plan: the call's plan; ``modules``: the caller's module at each path.
    :param state: the caller's state, told about every shell.
    :param compiled_types: classes of already compiled modules (shared as is).
    :param compile_node: ``compile_node(node, shell) -> module``, for claimed nodes.
    """

    def __init__(
        self,
        plan: Plan,
        modules: dict[str, torch.nn.Module],
        state: CallerState,
        compiled_types: tuple[type, ...],
        compile_node: Callable[[Node, torch.nn.Module], torch.nn.Module],
    ) -> None:
        self.plan = plan
        self.modules = modules
        self.state = state
        self.compiled_types = compiled_types
        self.compile_node = compile_node
        #: id(user module) -> (user module, shell)
        self.shells: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}

    def build(self) -> torch.nn.Module:
        """The stitched model: every module's result, children first (:meth:`Plan.fold`)."""
        return self.plan.fold(self._leave)

    def _leave(self, node: Node, children: dict[str, torch.nn.Module]) -> torch.nn.Module:
        """``node``'s result: its shell holding its children's results, compiled by
        ``compile_node`` if it is claimed."""
        module = self.modules[node.path]
        if isinstance(module, self.compiled_types):
            # the caller's own compiled module (a TorchScript one) cannot be shelled: shared as is
            return module
        # every Python module gets a shell, compiled or not: the compiled model must not
        # share anything with the caller's but tensors (``compiled.eval()``, hooks)
        shell = make_shell(module)
        self.shells[id(module)] = (module, shell)
        self.state.add_shell(module, shell)
        shell._modules.update(children)
        return shell if node.claim is None else self.compile_node(node, shell)

    def commit(self) -> None:
        """Copy compiled children into the caller's modules (``in_place=True``)."""
        shell_of = {key: shell for key, (_, shell) in self.shells.items()}
        for original, shell in self.shells.values():
            for name, child in shell._modules.items():
                current = original._modules.get(name)
                if child is current or (current is not None and shell_of.get(id(current)) is child):
                    continue
                original._modules[name] = child

    def shell_of(self, module: torch.nn.Module) -> torch.nn.Module | None:
        """The shell made for the caller's ``module`` (``None``: none was made)."""
        return self.shells.get(id(module), (None, None))[1]


def make_shell(module: _M) -> _M:
    """A new object of the module's class sharing its tensors, with its own containers.

    Not ``copy.copy``/``deepcopy``: those run ``__getstate__``/``__reduce__`` and
    may duplicate weights.  Strategies may set attributes on the shell (as
    TorchScript's script sets ``__overloads__``) without touching the original,
    and hooks registered on one later are not registered on the other.
    """
    shell = object.__new__(type(module))
    state = shell.__dict__
    state.update(module.__dict__)
    for name, value in module.__dict__.items():
        if "_hooks" in name and isinstance(value, dict):  # _forward_hooks, _state_dict_hooks, ...
            state[name] = value.copy()
    state["_modules"] = dict(module._modules)
    state["_parameters"] = dict(module._parameters)
    state["_buffers"] = dict(module._buffers)
    state["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
    return shell
