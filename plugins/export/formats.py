"""Artifact formats ``export`` (``torch.export.save``) and ``aoti`` (an AOTInductor package).

Both need an ``export`` root (an :class:`ExportedModule`). Each embeds the plan
and torchstitch's metadata as extra files; ``aoti`` also records, in the
package metadata that C++ reads with ``AOTIModelPackageLoader::get_metadata()``,
the input and output names and the custom operators the model calls with the
libraries that define them.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from typing import Any

import torch

from torchstitch import ArtifactError, ArtifactFormat
from torchstitch.plugins.toolkit import META_FILE, PLAN_FILE

from .module import AOTIModule, ExportedModule

__all__ = ["EXPORT_FORMAT", "AOTI_FORMAT", "custom_ops", "package_metadata"]

log = logging.getLogger(__name__)

#: namespaces that ship with torch (not custom-op libraries)
TORCH_NAMESPACES = frozenset({"aten", "prims", "prim", "higher_order", "_c10d_functional", "c10d_functional"})
#: key prefix of torchstitch's entries in the AOTInductor package metadata
META_PREFIX = "torchstitch."


def _accepts(module: Any) -> bool:
    return isinstance(module, ExportedModule)


# -- export --------------------------------------------------------------------


def _save_export(module: ExportedModule, path: str, extra: dict[str, str], options: dict[str, Any]) -> None:
    """``options`` are passed to ``torch.export.save`` (e.g. ``pickle_protocol``)."""
    torch.export.save(module.program, path, extra_files=extra, **options)


def _load_export(path: str, map_location: Any) -> tuple[ExportedModule, dict[str, str]]:
    if map_location is not None:
        raise ArtifactError(
            f"format 'export' loads on the devices it was saved for; got map_location={map_location!r}"
        )
    extra = {PLAN_FILE: "", META_FILE: ""}
    program = torch.export.load(path, extra_files=extra)
    return ExportedModule(program), {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}


EXPORT_FORMAT = ArtifactFormat(
    name="export",
    accepts=_accepts,
    save=_save_export,
    load=_load_export,
    description="a torch.export archive (torch.export.save); needs an 'export' root",
)


# -- aoti ----------------------------------------------------------------------


def custom_ops(program: torch.export.ExportedProgram) -> dict[str, str | None]:
    """The custom operators ``program`` calls, each with where it is defined.

    :returns: ``{"ns::op": library}``, where ``library`` is the path of a shared
        library loaded with ``torch.ops.load_library`` that defines the namespace,
        ``"python:<module>"`` for an operator defined in Python (``torch.library``;
        a C++ host cannot run it), or ``None`` when unknown.
    """
    found: dict[str, str | None] = {}
    modules = [program.graph_module, *program.graph_module.modules()]
    for gm in modules:
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        for node in gm.graph.nodes:
            target = node.target
            if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
                continue
            namespace = target.namespace
            if namespace in TORCH_NAMESPACES:
                continue
            name = f"{namespace}::{target._schema.name.split('::')[-1]}"
            found[name] = _library_of(target)
    return dict(sorted(found.items()))


def _library_of(op: torch._ops.OpOverload) -> str | None:
    from torch._library import custom_ops as library_custom_ops

    qualname = f"{op.namespace}::{op._schema.name.split('::')[-1]}"
    definition = library_custom_ops.OPDEFS.get(qualname)
    if definition is not None:
        return f"python:{getattr(definition._init_fn, '__module__', '?')}"
    libraries = sorted(getattr(torch.ops, "loaded_libraries", ()))
    # torch does not record which library registered a namespace: with one loaded it is that one
    return libraries[0] if len(libraries) == 1 else None


def package_metadata(module: ExportedModule, extra: dict[str, str]) -> dict[str, str]:
    """The string->string metadata compiled into an AOTInductor package."""
    program = module.program
    signature = program.graph_signature
    meta = json.loads(extra.get(META_FILE, "{}"))
    ops = custom_ops(program)
    return {
        f"{META_PREFIX}format": "aoti",
        f"{META_PREFIX}version": str(meta.get("torchstitch_version", "")),
        f"{META_PREFIX}torch_version": torch.__version__,
        f"{META_PREFIX}inputs": json.dumps(list(signature.user_inputs)),
        f"{META_PREFIX}outputs": json.dumps(list(signature.user_outputs)),
        f"{META_PREFIX}custom_ops": json.dumps(ops, sort_keys=True),
        f"{META_PREFIX}libraries": json.dumps(sorted({lib for lib in ops.values() if lib})),
    }


def _save_aoti(module: ExportedModule, path: str, extra: dict[str, str], options: dict[str, Any]) -> None:
    """``options``: ``inductor_configs`` for ``aoti_compile_and_package`` (the package
    metadata torchstitch records is merged into ``aot_inductor.metadata``)."""
    if not path.endswith(".pt2"):
        raise ArtifactError(f"an AOTInductor package must be named *.pt2, got {path!r}", path="")
    unknown = sorted(set(options) - {"inductor_configs"})
    if unknown:
        raise ArtifactError(f"format 'aoti' takes the option inductor_configs, got {unknown}", path="")
    configs = dict(options.get("inductor_configs") or {})
    configs["aot_inductor.metadata"] = {
        **configs.get("aot_inductor.metadata", {}),
        **package_metadata(module, extra),
    }
    log.info("AOTInductor: compiling %s (this takes a while)", path)
    written = torch._inductor.aoti_compile_and_package(
        module.program, package_path=path, inductor_configs=configs
    )
    # the plan can be large: it goes beside the model as zip members, not into the C++ metadata
    with zipfile.ZipFile(written) as archive:
        prefix = archive.namelist()[0].split("/", 1)[0]
    with zipfile.ZipFile(written, "a") as archive:
        for name, text in extra.items():
            archive.writestr(f"{prefix}/extra/{name}", text)


def _load_aoti(path: str, map_location: Any) -> tuple[AOTIModule, dict[str, str]]:
    if map_location is not None:
        raise ArtifactError(
            f"format 'aoti' runs on the device it was compiled for; got map_location={map_location!r}"
        )
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path!r} is not a zip archive")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if not any("/data/aotinductor/" in n for n in names):
            raise ArtifactError(f"{path!r} holds no AOTInductor model")
        extra = {
            key: archive.read(name).decode()
            for key in (PLAN_FILE, META_FILE)
            for name in names
            if name.endswith(f"/extra/{key}")
        }
    runner = torch._inductor.aoti_load_package(os.fspath(path))
    return AOTIModule(runner, runner.get_metadata()), extra


AOTI_FORMAT = ArtifactFormat(
    name="aoti",
    accepts=_accepts,
    save=_save_aoti,
    load=_load_aoti,
    description="an AOTInductor package (*.pt2, compiled C++; runs in Python and C++); needs an export root",
)
