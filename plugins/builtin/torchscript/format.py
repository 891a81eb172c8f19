"""The ``torchscript`` artifact format: ``torch.jit.save`` with the plan as an extra file."""

from __future__ import annotations

import re
from typing import Any

import torch

from torchstitch import ArtifactError, ArtifactFormat, hookimpl
from torchstitch.plugins.toolkit import META_FILE, PLAN_FILE, display_path

from .deprecation import report_torchscript_deprecations


def _accepts(module: Any) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


def _save(module: torch.jit.ScriptModule, path: str, extra: dict[str, str], options: dict[str, Any]) -> None:
    if options:
        raise ArtifactError(f"format 'torchscript' takes no options, got {sorted(options)}", path="")
    with report_torchscript_deprecations():
        try:
            torch.jit.save(module, path, _extra_files=extra)
        except RuntimeError as exc:
            python_call = _PYTHON_CALL.search(str(exc))
            if python_call is None:
                raise
            raise _python_call_error(module, python_call.group(1)) from exc


#: torch.jit.save's error for a call of a ``@torch.jit.ignore`` function
_PYTHON_CALL = re.compile(r"Could not export Python function call '([^']+)'")


def _python_call_error(module: torch.jit.ScriptModule, name: str) -> ArtifactError:
    """Name the submodule whose code calls the Python function ``name``.

    TorchScript keeps a ``@torch.jit.ignore`` method on the scripted module as a
    Python attribute, not as a compiled method: that is how its owner is found.
    """
    owners = [
        (path, sub)
        for path, sub in module.named_modules()
        if hasattr(sub, name) and not sub._c._has_method(name)
    ]
    path, where = "", "the model"
    if owners:
        path, owner = owners[0]
        where = f"the module at {display_path(path)!r} ({owner.original_name})"
    return ArtifactError(
        f"cannot save as TorchScript: {where} calls the Python function {name!r} "
        "(@torch.jit.ignore), which a TorchScript archive cannot hold: make it scriptable, "
        "or mark it @torch.jit.unused if the saved model never calls it",
        path=path,
    )


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
