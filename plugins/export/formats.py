"""Artifact formats ``export`` (``torch.export.save``) and ``aoti`` (an AOTInductor package).

Both need an ``export`` root (an :class:`ExportedModule`). Each embeds the plan
and torchstitch's metadata as extra files; ``aoti`` also records, in the
package metadata that C++ reads with ``AOTIModelPackageLoader::get_metadata()``,
the input and output names, the custom operators the model calls with the
libraries that define them, the torch that built it and what its inputs must be
(:class:`~torchstitch.plugins.export.guards.InputSpec`). Loading a package checks
the torch version, loads the libraries, and the loaded module checks every call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from typing import Any

import torch
from torch.utils import _pytree as pytree

from torchstitch import ArtifactError, ArtifactFormat
from torchstitch.plugins.toolkit import META_FILE, PLAN_FILE, CompileCache

from .cache import compile_package
from .guards import InputSpec
from .module import AOTIModule, ExportedModule

__all__ = ["EXPORT_FORMAT", "AOTI_FORMAT", "custom_ops", "package_metadata"]

log = logging.getLogger(__name__)

#: namespaces that ship with torch (not custom-op libraries)
TORCH_NAMESPACES = frozenset({"aten", "prims", "prim", "higher_order", "_c10d_functional", "c10d_functional"})
#: key prefix of torchstitch's entries in the AOTInductor package metadata
META_PREFIX = "torchstitch."
#: extra file of the ``export`` format: ``forward``'s argument names, for the loaded module's messages
INPUT_NAMES_FILE = "torchstitch/input_names.json"


def _accepts(module: Any) -> bool:
    return isinstance(module, ExportedModule)


# -- export --------------------------------------------------------------------


def _save_export(module: ExportedModule, path: str, extra: dict[str, str], options: dict[str, Any]) -> None:
    """``options`` are passed to ``torch.export.save`` (e.g. ``pickle_protocol``).

    :raises ArtifactError: when torch cannot serialise an operator of the program.
    """
    from torch._export.serde.serialize import SerializeError

    if module.input_spec is not None:
        extra = {**extra, INPUT_NAMES_FILE: json.dumps(list(module.input_spec.names))}
    try:
        torch.export.save(module.program, path, extra_files=extra, **options)
    except SerializeError as exc:
        raise ArtifactError(
            f"format 'export' cannot save this program: torch.export.save cannot serialise "
            f"{_unserialisable_operator(module.program, exc)}. Format 'aoti' may still work "
            "(ts.save(..., format='aoti') compiles the program instead of serialising it)",
            path=module.path,
            strategy="export",
        ) from exc


def _unserialisable_operator(program: torch.export.ExportedProgram, exc: Exception) -> str:
    """``the operator higher_order.flat_apply (node 'flat_apply')`` from torch's SerializeError."""
    text = str(exc)
    named = re.search(r"serializing node (\S+) in graph", text)
    if named is not None:
        for gm in program.graph_module.modules():
            if not isinstance(gm, torch.fx.GraphModule):
                continue
            node = next((n for n in gm.graph.nodes if n.name == named.group(1)), None)
            if node is not None:
                return f"the operator {_operator_name(node.target)} (node {node.name!r})"
    target = re.search(r"target=([\w.:]+)", text)
    if target is not None:
        return f"the operator {target.group(1)}"
    return f"an operator ({text.splitlines()[0] if text else type(exc).__name__})"


def _operator_name(target: Any) -> str:
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    if isinstance(target, torch._ops.OpOverload):
        return target.name()
    return getattr(target, "__qualname__", repr(target))


def _load_export(path: str, map_location: Any) -> tuple[ExportedModule, dict[str, str]]:
    if map_location is not None:
        raise ArtifactError(
            f"format 'export' loads on the devices it was saved for; got map_location={map_location!r}"
        )
    extra = {PLAN_FILE: "", META_FILE: "", INPUT_NAMES_FILE: ""}
    program = torch.export.load(path, extra_files=extra)
    extra = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}
    names = json.loads(extra.pop(INPUT_NAMES_FILE)) if extra.get(INPUT_NAMES_FILE) else None
    return ExportedModule(program, input_names=names), extra


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
        **({} if module.input_spec is None else {f"{META_PREFIX}input_spec": module.input_spec.to_json()}),
    }


def _save_aoti(module: ExportedModule, path: str, extra: dict[str, str], options: dict[str, Any]) -> None:
    """``options``: ``inductor_configs`` for ``aoti_compile_and_package`` (the package
    metadata torchstitch records is merged into ``aot_inductor.metadata``); ``cache_dir``:
    the compile cache (default: the ``cache_dir`` the model was compiled with, else
    ``$TORCHSTITCH_CACHE_DIR``, else none), where a package of
    the same architecture is reused with this model's weights (see :mod:`.cache`)."""
    if not path.endswith(".pt2"):
        raise ArtifactError(f"an AOTInductor package must be named *.pt2, got {path!r}", path="")
    unknown = sorted(set(options) - {"inductor_configs", "cache_dir"})
    if unknown:
        raise ArtifactError(
            f"format 'aoti' takes the options inductor_configs and cache_dir, got {unknown}", path=""
        )
    configs = dict(options.get("inductor_configs") or {})
    configs["aot_inductor.metadata"] = {
        **configs.get("aot_inductor.metadata", {}),
        **package_metadata(module, extra),
    }
    cache = CompileCache.from_option(options.get("cache_dir"))
    written = compile_package(module.program, path, configs, cache)
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
    _check_package(path, _package_metadata(path))
    runner = torch._inductor.aoti_load_package(os.fspath(path))
    metadata = runner.get_metadata()
    return AOTIModule(runner, metadata, _package_input_spec(runner, metadata)), extra


def _package_metadata(path: str) -> dict[str, str]:
    """The package metadata, read from the zip (before the compiled model is loaded)."""
    found: dict[str, str] = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if "/data/aotinductor/" in name and name.endswith("_metadata.json"):
                found.update(json.loads(archive.read(name)))
    return found


def _check_package(path: str, metadata: dict[str, str]) -> None:
    """Refuse a package this process cannot run, and load the custom-op libraries it calls.

    :raises ArtifactError: for another torch version than the one that built it, a
        device this machine lacks, or a recorded library that is missing.
    """
    built_with = metadata.get(f"{META_PREFIX}torch_version")
    if built_with and built_with != torch.__version__:
        raise ArtifactError(
            f"{path!r} was built with torch {built_with}, and this is torch {torch.__version__}: an "
            "AOTInductor package runs only under the torch that built it; compile and save it again "
            "with this torch",
            path="",
        )
    device = metadata.get("AOTI_DEVICE_KEY", "cpu")
    if not _device_available(device):
        raise ArtifactError(f"{path!r} was compiled for device {device!r}, which this machine lacks", path="")
    _load_libraries(path, metadata)


def _device_available(device: str) -> bool:
    if device == "cpu":
        return True
    backend = getattr(torch, device, None)  # torch.cuda, torch.xpu, torch.mps
    return bool(backend is not None and getattr(backend, "is_available", lambda: False)())


def _load_libraries(path: str, metadata: dict[str, str]) -> None:
    """``torch.ops.load_library`` each custom-op library the package recorded, before its model loads."""
    libraries = json.loads(metadata.get(f"{META_PREFIX}libraries", "[]"))
    ops = json.loads(metadata.get(f"{META_PREFIX}custom_ops", "{}"))
    loaded = set(getattr(torch.ops, "loaded_libraries", ()))
    for library in libraries:
        if library in loaded:
            continue
        if not os.path.exists(library):
            needed = sorted(op for op, lib in ops.items() if lib == library)
            raise ArtifactError(
                f"{path!r} calls custom operators {needed} from the library {library!r}, which does not "
                "exist here; install it at that path (or load it with torch.ops.load_library before "
                "ts.load)",
                path="",
            )
        log.info("%s: loading the custom-op library %s", path, library)
        torch.ops.load_library(library)


def _package_input_spec(runner: Any, metadata: dict[str, str]) -> InputSpec | None:
    """What the package's inputs must be, from its metadata; ``None`` if it did not record it."""
    text = metadata.get(f"{META_PREFIX}input_spec")
    loader = getattr(runner, "loader", None)
    if not text or loader is None:
        return None
    return InputSpec.from_json(text, pytree.treespec_loads(loader.get_call_spec()[0]))


AOTI_FORMAT = ArtifactFormat(
    name="aoti",
    accepts=_accepts,
    save=_save_aoti,
    load=_load_aoti,
    description="an AOTInductor package (*.pt2, compiled C++; runs in Python and C++); needs an export root",
    takes_cache_dir=True,
)
