"""Saving and loading artifacts, with the plan embedded as metadata."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import attrs
import torch

from .deprecation import report_torchscript_deprecations
from .errors import ArtifactError
from .ir import Plan

if TYPE_CHECKING:
    from .engine import CompileResult

__all__ = ["Artifact", "save", "load"]

PLAN_FILE = "torchstitch/plan.json"
META_FILE = "torchstitch/meta.json"
FORMATS = ("torchscript",)


@attrs.frozen
class Artifact:
    """A loaded artifact: the module, and the plan it was compiled with (if it was saved)."""

    #: the loaded module, ready to run
    module: torch.nn.Module = attrs.field(eq=False, repr=False)
    #: the plan embedded at save time; ``None`` for an artifact saved without one
    plan: Plan | None = attrs.field(eq=False, repr=False)
    #: ``"torchscript"``
    format: str
    #: versions and other facts recorded at save time
    metadata: dict[str, Any] = attrs.field(factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


def save(
    compiled: torch.nn.Module | CompileResult,
    path: str | os.PathLike[str],
    *,
    plan: Plan | None = None,
    format: str = "torchscript",
) -> None:
    """Save a compiled model; its plan (from a ``CompileResult`` or ``plan=``) goes inside.

    :raises ArtifactError: if the compiled root cannot be saved in ``format``
        (a root left in Python is not a TorchScript module).
    """
    from .engine import CompileResult

    if isinstance(compiled, CompileResult):
        plan = compiled.plan if plan is None else plan
        compiled = compiled.module
    if format not in FORMATS:
        raise ArtifactError(f"unknown artifact format {format!r}; known: {', '.join(FORMATS)}")
    if not isinstance(compiled, torch.jit.ScriptModule):
        strategy = None if plan is None else plan.root.strategy
        raise ArtifactError(
            f"the compiled root is a Python {type(compiled).__module__}.{type(compiled).__qualname__}, "
            "not a TorchScript module, so it cannot be saved as TorchScript: claim the root "
            "'script' or 'trace' (torchstitch.script(model) / torchstitch.trace(model, inputs)) "
            "or save the compiled submodules one by one",
            path="",
            strategy=strategy,
        )
    meta = {
        "format": format,
        "torchstitch_version": _version(),
        "torch_version": torch.__version__,
    }
    extra = {META_FILE: json.dumps(meta, sort_keys=True)}
    if plan is not None:
        extra[PLAN_FILE] = plan.to_json()
    with report_torchscript_deprecations():
        torch.jit.save(compiled, os.fspath(path), _extra_files=extra)


def load(path: str | os.PathLike[str], *, map_location: Any = None) -> Artifact:
    """Load an artifact saved by :func:`save` (or any TorchScript file, then without a plan)."""
    extra = {PLAN_FILE: "", META_FILE: ""}
    try:
        with report_torchscript_deprecations():
            module = torch.jit.load(os.fspath(path), map_location=map_location, _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise ArtifactError(f"{os.fspath(path)!r} is not a TorchScript artifact: {exc}") from exc
    meta = json.loads(extra[META_FILE]) if extra[META_FILE] else {}
    plan = Plan.from_json(_text(extra[PLAN_FILE])) if extra[PLAN_FILE] else None
    return Artifact(module, plan, meta.get("format", "torchscript"), meta)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _version() -> str:
    from .. import __version__

    return __version__
