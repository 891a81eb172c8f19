"""Keep the caller's parameters and buffers as they were while a plugin holds a shell of them.

A shell shares the caller's ``Parameter`` objects, and ``nn.Module._apply`` (behind
``.to()``, ``.half()``, ``.cuda()``) converts a parameter by assigning its ``.data``:
a strategy calling ``.to(torch.bfloat16)`` on the shell it is given converts the
caller's model.  A :class:`TensorGuard` records what such a call can change, one
tuple per tensor of a subtree, and puts back whatever changed.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch

__all__ = ["TensorGuard"]

log = logging.getLogger(__name__)


def _layout(tensor: torch.Tensor | None) -> tuple[Any, ...] | None:
    """What a conversion changes: dtype, device, shape, strides and the storage viewed."""
    if tensor is None:
        return None
    try:
        storage = (tensor.stride(), tensor.storage_offset(), tensor.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # sparse, nested: no strided storage to compare
        storage = None
    return (tensor.dtype, tensor.device, tensor.shape, storage)


class _Slot(NamedTuple):
    """One parameter or buffer of the caller's, as it was when the guard was made."""

    #: the owning module's ``_parameters``/``_buffers`` (``None`` for a ScriptModule's views)
    owner: dict[str, Any] | None
    name: str
    #: dotted name from the model's root
    dotted: str
    tensor: torch.Tensor
    #: ``tensor.data`` then: keeps the original storage alive, to be put back
    data: torch.Tensor
    layout: tuple[Any, ...] | None
    #: a parameter's ``.grad`` (converted along with it by ``.to()``); buffers have none
    is_parameter: bool
    grad: torch.Tensor | None
    grad_data: torch.Tensor | None
    grad_layout: tuple[Any, ...] | None


class TensorGuard:
    """The parameters and buffers of ``module``'s subtree (at dotted ``path``), as they are now.

    :param module: the caller's module whose tensors a plugin call may reach through a shell.
    :param path: ``module``'s dotted path from the root, to name tensors in messages.
    """

    def __init__(self, module: torch.nn.Module, path: str) -> None:
        self._slots = [
            slot for prefix, owner in module.named_modules(prefix=path) for slot in _slots_of(owner, prefix)
        ]

    def restore(self) -> list[str]:
        """Put back every tensor that changed; return what changed (``"dotted.name (what)"``)."""
        changed = []
        for slot in self._slots:
            what = _what_changed(slot)
            if what:
                _put_back(slot)
                changed.append(f"{slot.dotted} ({what})")
        if changed:
            log.debug("restored the caller's %s", ", ".join(changed))
        return changed


def _slots_of(module: torch.nn.Module, prefix: str) -> list[_Slot]:
    slots = []
    for kind in ("_parameters", "_buffers"):
        owner = module.__dict__.get(kind)
        # a ScriptModule's containers are views of its C++ object: compare, never rebind
        tensors = owner if isinstance(owner, dict) else dict(_script_tensors(module, kind))
        for name, tensor in tensors.items():
            if tensor is None:
                continue
            grad = tensor.grad if kind == "_parameters" else None
            slots.append(
                _Slot(
                    owner if isinstance(owner, dict) else None,
                    name,
                    f"{prefix}.{name}" if prefix else name,
                    tensor,
                    tensor.data,
                    _layout(tensor),
                    kind == "_parameters",
                    grad,
                    None if grad is None else grad.data,
                    _layout(grad),
                )
            )
    return slots


def _script_tensors(module: torch.nn.Module, kind: str):
    if kind == "_parameters":
        return module.named_parameters(recurse=False)
    return module.named_buffers(recurse=False)


def _what_changed(slot: _Slot) -> str:
    if slot.owner is not None and slot.owner.get(slot.name) is not slot.tensor:
        return "replaced by another tensor"
    now = _layout(slot.tensor)
    if now != slot.layout:
        return _describe(slot.layout, now)
    if slot.is_parameter and (slot.tensor.grad is not slot.grad or _layout(slot.grad) != slot.grad_layout):
        return "its .grad was replaced or converted"
    return ""


def _describe(before: tuple[Any, ...] | None, after: tuple[Any, ...] | None) -> str:
    assert before is not None and after is not None
    labels = ("dtype", "device", "shape")
    parts = [f"{label} {b} -> {a}" for label, b, a in zip(labels, before, after) if b != a]
    return ", ".join(parts) or "storage replaced"


def _put_back(slot: _Slot) -> None:
    with torch.no_grad():
        if slot.owner is not None:
            slot.owner[slot.name] = slot.tensor
        if _layout(slot.tensor) != slot.layout:
            slot.tensor.data = slot.data
        if slot.grad is not None and _layout(slot.grad) != slot.grad_layout:
            assert slot.grad_data is not None  # taken along with the grad
            slot.grad.data = slot.grad_data
        if slot.is_parameter and slot.tensor.grad is not slot.grad:
            slot.tensor.grad = slot.grad
