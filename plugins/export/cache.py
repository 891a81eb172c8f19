"""The compile cache of the export family: ``export`` nodes and AOTInductor packages.

Two things are kept by architecture and refitted with the caller's weights:

- an ``export`` node (:func:`save_exported` / :func:`load_exported`, the strategy's
  cache codec): the ``ExportedProgram`` (``torch.export.save``) and, for each of its
  parameters, buffers and constants, the name of the module tensor it came from.
  Loading puts the shell's own tensors back in, so the node shares storage with the
  caller's model as a fresh export does;
- an AOTInductor package (:func:`compile_package`, used by the ``aoti`` format): built
  with its weights outside the compiled library (one blob file in the package), keyed
  by the program's graph, signature, shapes, inductor options and versions, never by
  the weights.  A hit copies the cached package and writes the program's own weights
  into a new blob, so no C++ is compiled.  The blob's layout (order, sizes, strides of
  the constants) is read from the package's generated C++ and checked against the
  blob inductor wrote, before the package is cached at all.

See docs/cache.md ("Caching export and AOTI").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import torch
from torch.export.graph_signature import InputKind

from torchstitch import TorchstitchWarning, __version__
from torchstitch.plugins.toolkit import display_path, warn

from .isa import isa_checked_alongside
from .module import ExportedModule

__all__ = [
    "EXPORT_CODEC_VERSION",
    "PACKAGE_CODEC_VERSION",
    "REFIT_CONFIGS",
    "compile_package",
    "load_exported",
    "package_key",
    "refit",
    "save_exported",
]

log = logging.getLogger(__name__)

#: layout of an export node's entry (part of the node key through the codec)
EXPORT_CODEC_VERSION = "1"
#: layout of an AOTI package entry (part of the package key)
PACKAGE_CODEC_VERSION = "1"
#: an export node's entry: the program, and where its tensors came from
PROGRAM_FILE = "program.pt2"
NODE_FILE = "node.json"
#: an AOTI package entry: the package (without torchstitch's extra files) and its blob layout
PACKAGE_FILE = "package.pt2"
LAYOUT_FILE = "layout.json"
#: inductor options that keep every weight out of the compiled code: in one blob file
#: of the package (which C++'s AOTIModelPackageLoader loads too), none inlined as a literal
REFIT_CONFIGS: Mapping[str, Any] = {
    "always_keep_tensor_constants": True,
    "aot_inductor.package_constants_in_so": False,
    "aot_inductor.package_constants_on_disk_format": "binary_blob",
}
#: user options under which the compiled code depends on the weights' values
_BAKING_CONFIGS = ("freezing", "aot_inductor.use_runtime_constant_folding")
#: program inputs that are tensors of the model (refitted), not the caller's inputs
_STATE_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


class PackageCache(Protocol):
    """What :func:`compile_package` needs of the compile cache (``CompileCache``)."""

    def lookup(self, key: str) -> Path | None: ...

    def store(self, key: str, write: Callable[[Path], None], describe: Mapping[str, str]) -> None: ...

    def discard(self, key: str) -> None: ...


class NotRefittable(Exception):
    """A program or package whose weights cannot be swapped (the message says why)."""


# -- export nodes ------------------------------------------------------------------


def save_exported(compiled: torch.nn.Module, folder: Path) -> None:
    """Write an export node to a cache entry: the program and where its tensors came from.

    :param compiled: a freshly compiled node, an :class:`ExportedModule` (its ``source`` is
        the shell it was exported from).
    :param folder: the entry's empty folder.
    """
    assert isinstance(compiled, ExportedModule), "the export strategy compiles ExportedModules"
    folder = Path(folder)
    torch.export.save(compiled.program, folder / PROGRAM_FILE)
    info = {"path": compiled.path, "sources": tensor_sources(compiled.program, compiled.source)}
    (folder / NODE_FILE).write_text(json.dumps(info, indent=1, sort_keys=True))


def load_exported(
    folder: Path,
    shell: torch.nn.Module,
    *,
    inline: Callable[[torch.nn.Module], torch.nn.Module] = lambda module: module,
) -> ExportedModule:
    """Read an export node back from a cache entry, with ``shell``'s weights.

    :param folder: the entry written by :func:`save_exported`.
    :param shell: the engine's shell of the node (it shares the caller's tensors).
    :param inline: what the strategy exports of a shell (its exported children replaced
        by their eager code); the loaded node keeps it as its ``source``, as a fresh one.
    :returns: what a fresh export of ``shell`` returns: its program and unlifted module
        use the very parameter and buffer tensors of ``shell``.
    :raises NotRefittable: when ``shell`` lacks a tensor the program takes, or has one of
        another shape, dtype or device (the key should have prevented it).
    """
    folder = Path(folder)
    info = json.loads((folder / NODE_FILE).read_text())
    program = torch.export.load(folder / PROGRAM_FILE)
    eager = inline(shell)
    program = refit(program, eager, info["sources"], info["path"])
    return ExportedModule(program, source=eager, path=info["path"])


def tensor_sources(
    program: torch.export.ExportedProgram, source: torch.nn.Module | None
) -> dict[str, str | None]:
    """For each tensor of ``program`` (state dict and constants), the name of the tensor
    of ``source`` it is; ``None`` for one of the code's own (a literal ``torch.tensor``).

    Matched by identity, as export keeps the module's tensors (``make_fx`` names them
    ``_param_constant0``, ...); without a source each tensor is taken by its own name.
    """
    state = _program_tensors(program)
    if source is None:
        return {name: name for name in state}
    by_id: dict[int, str] = {}
    for name, tensor in named_tensors(source):
        by_id.setdefault(id(tensor), name)
    return {name: by_id.get(id(tensor)) for name, tensor in state.items()}


def named_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of ``module``: parameters, buffers and plain tensor attributes (which
    export takes as constants), by dotted name, duplicates included."""
    for prefix, child in module.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        for name, value in [*child._parameters.items(), *child._buffers.items(), *vars(child).items()]:
            if isinstance(value, torch.Tensor):
                yield dot + name, value


def refit(
    program: torch.export.ExportedProgram,
    source: torch.nn.Module,
    sources: Mapping[str, str | None],
    path: str = "",
) -> torch.export.ExportedProgram:
    """``program`` with each tensor replaced by the tensor of ``source`` it came from.

    :param sources: what :func:`tensor_sources` recorded; a tensor it maps to ``None``
        (the code's own constant) is kept.
    :raises NotRefittable: when a tensor is missing from ``source`` or does not fit.
    """
    tensors = dict(named_tensors(source))

    def pick(name: str, value: Any) -> Any:
        origin = sources.get(name)
        if origin is None or not isinstance(value, torch.Tensor):
            return value
        mine = tensors.get(origin)
        if mine is None:
            raise NotRefittable(f"{display_path(path)}: the module has no tensor {origin!r}")
        if (mine.shape, mine.dtype, mine.device) != (value.shape, value.dtype, value.device):
            raise NotRefittable(
                f"{display_path(path)}: {origin!r} is {_describe(mine)}, "
                f"the cached program's {_describe(value)}"
            )
        return mine

    state_dict = {name: pick(name, value) for name, value in program.state_dict.items()}
    constants = {name: pick(name, value) for name, value in program.constants.items()}
    return program._update(
        program.graph_module, program.graph_signature, state_dict=state_dict, constants=constants
    )


def _program_tensors(program: torch.export.ExportedProgram) -> dict[str, Any]:
    return {**program.state_dict, **program.constants}


def _describe(tensor: torch.Tensor) -> str:
    return f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)} on {tensor.device}"


# -- AOTInductor packages ----------------------------------------------------------


def refittable_configs(configs: Mapping[str, Any]) -> dict[str, Any] | None:
    """``configs`` with :data:`REFIT_CONFIGS`; ``None`` when they make inductor fold the
    weights into the code (``freezing``): such a package is never cached."""
    if any(configs.get(name) for name in _BAKING_CONFIGS):
        return None
    return {**configs, **REFIT_CONFIGS}


def package_key(program: torch.export.ExportedProgram, configs: Mapping[str, Any]) -> str:
    """The sha256 of everything that decides an AOTInductor package's compiled code, and
    nothing else: the graphs (every node with its shapes, dtypes, strides and devices),
    the signature, the dims' ranges, the in/out structure, the tensors' shapes, dtypes,
    strides and devices (not their values), the inductor options (with the package
    metadata), the host and compiler, and the versions of torch and torchstitch."""
    parts = {
        "codec": PACKAGE_CODEC_VERSION,
        "torch": torch.__version__,
        "torchstitch": __version__,
        "host": [sys.platform, platform.machine(), os.environ.get("CXX", ""), _accelerators(program)],
        "graphs": list(_graph_lines(program)),
        "signature": str(program.graph_signature),
        "ranges": sorted(f"{symbol}: {bounds}" for symbol, bounds in program.range_constraints.items()),
        "call_spec": [str(program.call_spec.in_spec), str(program.call_spec.out_spec)],
        "tensors": {name: _value_text(value) for name, value in sorted(_program_tensors(program).items())},
        "configs": json.dumps(configs, sort_keys=True, default=repr),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _graph_lines(program: torch.export.ExportedProgram) -> Iterator[str]:
    for name, gm in program.graph_module.named_modules():
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        yield f"graph {name!r}"
        for node in gm.graph.nodes:
            # the output node's value is what its arguments' are (and torch.export.load adds it)
            value = None if node.op == "output" else node.meta.get("val")
            yield f"{node.format_node()} :: {_value_text(value)}"


def _value_text(value: Any) -> str:
    """A node's value by what compiled code depends on (a tensor's shape, not its data)."""
    if isinstance(value, torch.Tensor):
        shape = [str(size) for size in value.shape]
        stride = [str(step) for step in value.stride()] if value.layout == torch.strided else []
        return f"{value.dtype}{shape}{stride}@{value.device}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_value_text(item) for item in value) + ")"
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool, str, type(None))):
        return (
            repr(value)
            if not isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool))
            else str(value)
        )
    return type(value).__qualname__


def _accelerators(program: torch.export.ExportedProgram) -> list[str]:
    """The compute capability of each CUDA device the program's tensors are on (kernels differ)."""
    devices = {t.device for t in _program_tensors(program).values() if isinstance(t, torch.Tensor)}
    return sorted(
        f"{device}: {torch.cuda.get_device_capability(device)}" for device in devices if device.type == "cuda"
    )


def compile_package(
    program: torch.export.ExportedProgram,
    path: str,
    configs: Mapping[str, Any],
    cache: PackageCache | None,
) -> str:
    """``aoti_compile_and_package(program)`` into ``path``, or, when ``cache`` holds a package
    of the same architecture, a copy of it with ``program``'s weights.

    A miss builds the package with its weights outside the compiled code
    (:data:`REFIT_CONFIGS`) and stores it; a package whose weights cannot be swapped
    (``freezing``, or a layout that does not check out) is built as usual and not stored.

    :returns: the path of the package written.
    """
    if cache is None:
        return _compile(program, path, configs)
    refit_configs = refittable_configs(configs)
    if refit_configs is None:
        log.info("AOTInductor: not cached: freezing folds the weights into the compiled code")
        return _compile(program, path, configs)
    key = package_key(program, refit_configs)
    entry = cache.lookup(key)
    if entry is not None:
        try:
            write_package(entry, program, path)
        except (NotRefittable, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            warn(
                f"AOTInductor package cache entry {key[:8]} is unusable ({exc}): rebuilding it",
                TorchstitchWarning,
            )
            cache.discard(key)
        else:
            log.info(
                "AOTInductor: cache hit %s: reused the compiled package with this model's weights", key[:8]
            )
            return path
    written = _compile(program, path, refit_configs)
    try:
        layout = package_layout(written, program)
    except NotRefittable as exc:
        warn(f"the AOTInductor package of this model is not cached: {exc}", TorchstitchWarning)
        return written
    describe = {"format": "aoti", "constants": str(len(layout["constants"]))}
    cache.store(key, lambda folder: _write_entry(folder, written, layout), describe)
    log.info("AOTInductor: cache miss %s: built and stored", key[:8])
    return written


def _compile(program: torch.export.ExportedProgram, path: str, configs: Mapping[str, Any]) -> str:
    log.info("AOTInductor: compiling %s (this takes a while)", path)
    with isa_checked_alongside(program, configs):
        return torch._inductor.aoti_compile_and_package(
            program, package_path=path, inductor_configs=dict(configs)
        )


def _write_entry(folder: Path, package: str, layout: Mapping[str, Any]) -> None:
    shutil.copyfile(package, folder / PACKAGE_FILE)
    (folder / LAYOUT_FILE).write_text(json.dumps(layout, indent=1, sort_keys=True))


# -- the weights blob ----------------------------------------------------------------


@attrs.frozen
class Constant:
    """One constant of a compiled AOTInductor model, as its generated C++ declares it."""

    #: the program tensor it holds (``original_fqn``)
    fqn: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    #: storage offset of the tensor in its chunk, in elements
    offset: int
    #: bytes of its chunk in the blob (the whole storage, padded)
    data_size: int

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "dtype": str(self.dtype).removeprefix("torch.")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Constant:
        return cls(
            fqn=str(data["fqn"]),
            dtype=_dtype(str(data["dtype"])),
            shape=tuple(int(s) for s in data["shape"]),
            stride=tuple(int(s) for s in data["stride"]),
            offset=int(data["offset"]),
            data_size=int(data["data_size"]),
        )


#: ``constants_info_[3].data_size = 64;`` in the generated wrapper C++
_CONSTANT_FIELD = re.compile(r"^\s*constants_info_\[(\d+)\]\.(\w+) = (.*);\s*$", re.MULTILINE)


def package_layout(package: str, program: torch.export.ExportedProgram) -> dict[str, Any]:
    """The layout of ``package``'s weights blob, checked against ``program`` (its weights
    built the package): every tensor the graph reads is a constant of the blob, and the
    blob :func:`weights_blob` makes of ``program`` holds what inductor wrote.

    :raises NotRefittable: for a package without one blob and one wrapper, a constant
        that is no tensor of the program, or one stored otherwise than expected.
    """
    with zipfile.ZipFile(package) as archive:
        blob_name = _only(archive.namelist(), "_weights.blob", "weights blob")
        wrapper = archive.read(_only(archive.namelist(), ".wrapper.cpp", "wrapper source")).decode()
        written = archive.read(blob_name)
    constants = _read_constants(wrapper)
    tensors = _program_tensors(program)
    missing = sorted(set(_used_state(program)) - {c.fqn for c in constants})
    if missing:
        raise NotRefittable(f"inductor compiled the tensors {missing} into the code")
    unknown = sorted(c.fqn for c in constants if c.fqn not in tensors)
    if unknown:
        raise NotRefittable(f"the package has constants {unknown} that are no tensors of the program")
    if weights_blob(constants, tensors) != written and not _same_values(constants, tensors, written):
        raise NotRefittable("the weights blob is not laid out as its C++ declares")
    return {"blob": blob_name, "constants": [c.to_json() for c in constants]}


def write_package(entry: Path, program: torch.export.ExportedProgram, path: str) -> None:
    """Write to ``path`` the cached package of ``entry`` with ``program``'s weights in its blob."""
    layout = json.loads((Path(entry) / LAYOUT_FILE).read_text())
    constants = [Constant.from_json(c) for c in layout["constants"]]
    blob = weights_blob(constants, _program_tensors(program))
    with zipfile.ZipFile(Path(entry) / PACKAGE_FILE) as source, zipfile.ZipFile(path, "w") as target:
        if layout["blob"] not in source.namelist():
            raise NotRefittable(f"the cached package lacks its blob {layout['blob']!r}")
        for info in source.infolist():
            data = blob if info.filename == layout["blob"] else source.read(info)
            target.writestr(info, data)


def weights_blob(constants: list[Constant], tensors: Mapping[str, Any]) -> bytes:
    """The blob the compiled model reads its constants from: for each, in order, a chunk of
    ``data_size`` bytes holding the tensor at its offset and strides (as inductor writes it)."""
    chunks = []
    for constant in constants:
        value = tensors.get(constant.fqn)
        if not isinstance(value, torch.Tensor):
            raise NotRefittable(f"the program has no tensor {constant.fqn!r}")
        if (tuple(value.shape), value.dtype) != (constant.shape, constant.dtype):
            raise NotRefittable(
                f"{constant.fqn!r} is {_describe(value)}, "
                f"the package's {constant.dtype}{list(constant.shape)}"
            )
        chunk = torch.zeros(constant.data_size, dtype=torch.uint8)
        _view(chunk, constant).copy_(value.detach())
        chunks.append(chunk)
    return torch.cat(chunks).numpy().tobytes() if chunks else b""


def _view(chunk: torch.Tensor, constant: Constant) -> torch.Tensor:
    """The tensor of ``constant`` in its blob chunk (raises when it does not fit the chunk)."""
    return torch.as_strided(chunk.view(constant.dtype), constant.shape, constant.stride, constant.offset)


def _same_values(constants: list[Constant], tensors: Mapping[str, Any], written: bytes) -> bool:
    """Whether each constant's tensor reads the same in ``written`` as in the program (a
    tensor that views part of a larger storage leaves other bytes in its chunk)."""
    if len(written) != sum(c.data_size for c in constants):
        return False
    blob = (
        torch.frombuffer(bytearray(written), dtype=torch.uint8)
        if written
        else torch.zeros(0, dtype=torch.uint8)
    )
    start = 0
    for constant in constants:
        stored = _view(blob[start : start + constant.data_size], constant)
        start += constant.data_size
        expected = tensors[constant.fqn].detach().cpu().contiguous()
        if not torch.equal(stored.contiguous().view(torch.uint8), expected.view(torch.uint8)):
            return False
    return True


def _read_constants(wrapper: str) -> list[Constant]:
    """The blob's constants, in blob order (folded ones are not in the blob), from the wrapper C++."""
    fields: dict[int, dict[str, str]] = {}
    for index, field, value in _CONSTANT_FIELD.findall(wrapper):
        fields.setdefault(int(index), {})[field] = value.strip()
    constants = []
    for index in sorted(fields):
        found = fields[index]
        if found.get("from_folded") == "true":
            continue
        try:
            layout = found.get("layout", "strided")
            if not layout.endswith("strided)") and layout != "strided":
                raise NotRefittable(f"constant {found.get('name')} has the layout {layout}")
            constants.append(
                Constant(
                    fqn=json.loads(found["original_fqn"]),
                    dtype=_dtype(found["dtype"].removeprefix("cached_torch_dtype_")),
                    shape=_ints(found["shape"]),
                    stride=_ints(found["stride"]),
                    offset=int(found["offset"]),
                    data_size=int(found["data_size"]),
                )
            )
        except (KeyError, ValueError) as exc:
            raise NotRefittable(f"the C++ of constant {index} does not read ({exc})") from exc
    return constants


def _used_state(program: torch.export.ExportedProgram) -> list[str]:
    """The tensors of the model (parameters, buffers, constants) the program's graph reads."""
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    return [
        spec.target
        for spec in program.graph_signature.input_specs
        if spec.kind in _STATE_KINDS and spec.target and placeholders[spec.arg.name].users
    ]


def _only(names: list[str], suffix: str, what: str) -> str:
    found = [name for name in names if name.endswith(suffix)]
    if len(found) != 1:
        raise NotRefittable(f"the package holds {len(found)} files *{suffix} ({what}), not one")
    return found[0]


def _ints(text: str) -> tuple[int, ...]:
    inner = text.strip().removeprefix("{").removesuffix("}").strip()
    return tuple(int(part) for part in inner.split(",") if part.strip())


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype
