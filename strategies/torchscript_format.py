"""The ``torchscript`` artifact format: ``torch.jit.save`` with the plan as an extra file."""

from __future__ import annotations

from typing import Any

import torch

from ..core.deprecation import report_torchscript_deprecations
from ..core.errors import ArtifactError
from ..core.hookspecs import hookimpl
from ..core.serialization import META_FILE, PLAN_FILE, ArtifactFormat


def _accepts(module: Any) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


def _save(module: torch.jit.ScriptModule, path: str, extra: dict[str, str], options: dict[str, Any]) -> None:
    if options:
        raise ArtifactError(f"format 'torchscript' takes no options, got {sorted(options)}", path="")
    with report_torchscript_deprecations():
        torch.jit.save(module, path, _extra_files=extra)


def _load(path: str, map_location: Any) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    extra = {PLAN_FILE: "", META_FILE: ""}
    with report_torchscript_deprecations():
        module = torch.jit.load(path, map_location=map_location, _extra_files=extra)
    return module, {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}


FORMAT = ArtifactFormat(
    name="torchscript",
    accepts=_accepts,
    save=_save,
    load=_load,
    description="a TorchScript archive (torch.jit.save) for libtorch hosts; needs a TorchScript root",
)


@hookimpl
def torchstitch_artifact_formats() -> list[ArtifactFormat]:
    return [FORMAT]
