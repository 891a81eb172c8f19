"""What an ``export`` node is stitched back as: a module wrapping its ``ExportedProgram``."""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = ["ExportedModule", "AOTIModule"]

log = logging.getLogger(__name__)


class ExportedModule(torch.nn.Module):
    """A compiled ``export`` node: runs ``program.module()`` (the unlifted, callable form).

    :param program: the ``torch.export.ExportedProgram`` of the node.
    :param source: the eager module it was exported from (the engine's shell); kept,
        unregistered, so that an ``export`` ancestor re-exports the eager code instead
        of tracing through the unlifted graph. ``None`` after :func:`torchstitch.load`.
    :param path: the node's dotted path, for messages.
    """

    source: torch.nn.Module | None  # set through ``__dict__`` (see ``__init__``)

    def __init__(
        self,
        program: torch.export.ExportedProgram,
        *,
        source: torch.nn.Module | None = None,
        path: str = "",
    ) -> None:
        super().__init__()
        #: the ExportedProgram (what ``torch.export.save`` and AOTInductor take)
        self.program = program
        #: ``program.module()``: the callable form, built once
        self.unlifted = program.module()
        self.path = path
        # in __dict__, not _modules: not a submodule (no duplicate parameters, not saved)
        self.__dict__["source"] = source

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.unlifted(*args, **kwargs)

    def train(self, mode: bool = True) -> ExportedModule:
        # ``program.module()`` refuses train()/eval(): the mode was fixed at export time
        self.training = mode
        return self

    def extra_repr(self) -> str:
        return f"path={self.path!r}"


class AOTIModule(torch.nn.Module):
    """An AOTInductor package loaded by :func:`torchstitch.load` (format ``aoti``).

    :param runner: what ``torch._inductor.aoti_load_package`` returned.
    :param metadata: the package's metadata (``runner.get_metadata()``).
    """

    runner: Any  # set through ``__dict__``: not a submodule

    def __init__(self, runner: Any, metadata: dict[str, str]) -> None:
        super().__init__()
        self.__dict__["runner"] = runner
        self.metadata = dict(metadata)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.runner(*args, **kwargs)
