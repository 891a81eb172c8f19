"""The compile cache's codec of the TorchScript strategies (``script``, ``trace``).

An entry is the compiled node's ``torch.jit.save`` archive.  Loading it back gives a
module with the weights the archive was written with; every parameter and buffer is
then replaced, by dotted name, by the very tensor of the engine's shell of the node,
so the loaded module shares storage with the caller's model exactly as a fresh
compile does.  ``freeze=True`` folds weights into the graph as constants: it runs
after the cache (a finalize step), on the loaded modules, and its result is never
cached.  See docs/cache.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from torchstitch import CacheCodec

from .deprecation import report_torchscript_deprecations

__all__ = ["CODEC", "refit"]

#: the archive's file name in an entry
ARCHIVE = "module.pt"


def _save(compiled: torch.nn.Module, folder: Path) -> None:
    with report_torchscript_deprecations():
        torch.jit.save(compiled, str(folder / ARCHIVE))


def _load(folder: Path, shell: torch.nn.Module) -> torch.nn.Module:
    with report_torchscript_deprecations():
        loaded = torch.jit.load(str(folder / ARCHIVE))
    refit(loaded, shell)
    return loaded


def _tensors(module: torch.nn.Module) -> Iterator[tuple[str, str, torch.Tensor]]:
    """``(kind, dotted name, tensor)`` of every parameter and buffer, shared ones under each name."""
    for name, parameter in module.named_parameters(remove_duplicate=False):
        yield "parameter", name, parameter
    for name, buffer in module.named_buffers(remove_duplicate=False):
        yield "buffer", name, buffer


def refit(loaded: torch.jit.ScriptModule, shell: torch.nn.Module) -> None:
    """Put ``shell``'s parameters and buffers into ``loaded`` under the same dotted names.

    :raises ValueError: the two do not have the same parameters and buffers (shapes and
        dtypes included): the archive is not this node's.
    """
    ours = {(kind, name): tensor for kind, name, tensor in _tensors(shell)}
    theirs = {(kind, name): tensor for kind, name, tensor in _tensors(loaded)}
    if ours.keys() != theirs.keys():
        differ = sorted(f"{kind} {name}" for kind, name in ours.keys() ^ theirs.keys())
        raise ValueError(
            f"the archive's parameters and buffers differ from the module's: {', '.join(differ[:5])}"
        )
    for (kind, name), tensor in ours.items():
        old = theirs[(kind, name)]
        if old.shape != tensor.shape or old.dtype != tensor.dtype:
            raise ValueError(
                f"the archive's {kind} {name} is {tuple(old.shape)} {old.dtype}, "
                f"not {tuple(tensor.shape)} {tensor.dtype}"
            )
        *owners, attribute = name.split(".")
        target = loaded
        for owner in owners:  # ScriptModules have no get_submodule
            target = getattr(target, owner)
        target._c.setattr(attribute, tensor)


CODEC = CacheCodec(save=_save, load=_load, version="1")
