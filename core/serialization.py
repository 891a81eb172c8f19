"""Saving and loading artifacts, with the plan embedded as metadata.

Artifact formats are plugins (hook ``torchstitch_artifact_formats``): the
built-in ``torchscript`` format lives in ``plugins/builtin/torchscript/format.py``;
plugins add others (``export``, ``aoti``).  Every format stores two JSON
documents beside the model: the plan and a small metadata record.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs
import torch

from .._version import __version__
from .errors import ArtifactError, StitchError, exception_summary
from .ir import Plan
from .plugin_manager import PluginSet
from .provenance import attach_plan, cache_dir_of, plan_of
from .strategy import ArtifactFormat  # re-exported: formats were defined here first

__all__ = ["Artifact", "ArtifactFormat", "CompiledWithPlan", "save", "load", "read_zip_member"]

log = logging.getLogger(__name__)

#: what the metadata's ``"plan"`` says when no plan is known for the saved module
NO_PLAN = (
    "none: the module was not returned by a torchstitch compile in this process "
    "(a copy, a re-scripted or re-loaded module, or one built without torchstitch)"
)

#: names of the two documents every format embeds (as zip members ending with them)
PLAN_FILE = "torchstitch/plan.json"
META_FILE = "torchstitch/meta.json"


class CompiledWithPlan(Protocol):
    """What :func:`save` takes besides a module: a compiled ``module`` with its ``plan``,
    such as :class:`~torchstitch.CompileResult`.

    Matched by shape, not by class, so that saving does not depend on the engine
    that makes results (the engine saves through this module).
    """

    @property
    def module(self) -> torch.nn.Module: ...

    @property
    def plan(self) -> Plan: ...


@attrs.frozen
class Artifact:
    """A loaded artifact: the module, and the plan it was compiled with (if it was saved)."""

    #: the loaded model, ready to run
    module: Any = attrs.field(eq=False, repr=False)
    #: the plan embedded at save time; ``None`` for an artifact saved without one
    plan: Plan | None = attrs.field(eq=False, repr=False)
    #: the artifact format's name
    format: str
    #: versions and other facts recorded at save time
    metadata: dict[str, Any] = attrs.field(factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


def formats(plugin_set: PluginSet) -> dict[str, ArtifactFormat]:
    """Every artifact format the plugins provide, by name."""
    from .errors import PluginError

    out: dict[str, ArtifactFormat] = {}
    for plugin, result in plugin_set.ask_each("torchstitch_artifact_formats"):
        if not isinstance(result, (list, tuple)) or not all(isinstance(f, ArtifactFormat) for f in result):
            raise PluginError(
                f"must return a list of torchstitch.ArtifactFormat, got {result!r}",
                plugin=plugin,
                hook="torchstitch_artifact_formats",
            )
        for fmt in result:
            out.setdefault(fmt.name, fmt)
    return out


def read_zip_member(path: str, suffix: str) -> str | None:
    """The text of the first member of zip file ``path`` whose name ends with ``suffix``."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(suffix):
                return archive.read(name).decode()
    return None


def save(
    compiled: torch.nn.Module | CompiledWithPlan,
    path: str | os.PathLike[str],
    *,
    plan: Plan | None = None,
    format: str | None = None,
    plugins: Iterable[object | str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Save a compiled model with the plan it was compiled with.

    The plan is ``plan=`` if given, else the ``CompileResult``'s, else the one
    torchstitch attached to the module it returned (``ts.compile``, ``ts.script``,
    ``Engine.compile``).  A module torchstitch did not return itself (a copy, a
    re-scripted or re-loaded module) has none: the artifact's metadata then says so.

    :param format: an artifact format name (``"torchscript"``, or one a plugin
        adds); by default the first format that accepts the compiled root.
    :param options: options of the chosen format (e.g. ``{"inductor_configs": {...}}``
        for ``"aoti"``).  A format that takes ``cache_dir`` (``"aoti"``) gets the
        ``cache_dir`` the model was compiled with unless ``options`` name one.
    :raises ArtifactError: if ``compiled`` is neither a module nor a ``CompileResult``,
        no format can save the compiled root (a root left in Python is not a
        TorchScript module), ``format`` is unknown, the format fails, or ``path``
        cannot be written (also an :class:`OSError`); nothing is left at ``path``
        then (a file already there stays as it was).
    """
    compiled, plan = _module_and_plan(compiled, plan)
    known = formats(PluginSet.from_plugins(plugins))
    if format is None:
        chosen = next((f for f in known.values() if f.accepts(compiled)), None)
        if chosen is None:
            strategy = None if plan is None else plan.root.strategy
            raise ArtifactError(
                f"no artifact format accepts the compiled root, a {_type_name(compiled)}"
                + (" left in Python" if strategy is None else "")
                + ". Claim the root with a strategy whose artifact a format saves; formats: "
                + "; ".join(f"{name!r}: {known[name].description}" for name in sorted(known)),
                path="",
                strategy=strategy,
            )
    elif format in known:
        chosen = known[format]
        if not chosen.accepts(compiled):
            raise ArtifactError(
                f"format {format!r} cannot save a {type(compiled).__qualname__} ({chosen.description})",
                path="",
            )
    else:
        raise ArtifactError(f"unknown artifact format {format!r}; known: {', '.join(sorted(known))}")
    meta = {
        "format": chosen.name,
        "torchstitch_version": __version__,
        "torch_version": torch.__version__,
        "plan": "embedded" if plan is not None else NO_PLAN,
    }
    extra = {META_FILE: json.dumps(meta, sort_keys=True)}
    if plan is not None:
        extra[PLAN_FILE] = plan.to_json()
    options = dict(options or {})
    inherited = cache_dir_of(compiled)
    if chosen.takes_cache_dir and inherited is not None:
        options.setdefault("cache_dir", inherited)
    _write(chosen, compiled, os.fspath(path), extra, options)


def _module_and_plan(
    compiled: torch.nn.Module | CompiledWithPlan, plan: Plan | None
) -> tuple[torch.nn.Module, Plan | None]:
    """The module to save, and the plan to embed: ``plan`` if given, else the result's,
    else the one attached to the module."""
    if not isinstance(compiled, torch.nn.Module):
        module, its_plan = getattr(compiled, "module", None), getattr(compiled, "plan", None)
        if not (isinstance(module, torch.nn.Module) and isinstance(its_plan, Plan)):
            raise ArtifactError(
                f"ts.save takes a compiled module or a CompileResult, got a {_type_name(compiled)}",
                path="",
            )
        compiled, plan = module, its_plan if plan is None else plan
    return compiled, plan_of(compiled) if plan is None else plan


def _write(
    fmt: ArtifactFormat, module: Any, path: str, extra: dict[str, str], options: dict[str, Any]
) -> None:
    """Let ``fmt`` write ``module`` to a temporary name beside ``path``, then rename it to
    ``path``: a failed save leaves no half-written file, and an old file at ``path`` intact.

    The temporary name ends with ``path``'s name, so formats that check the suffix
    (``aoti`` wants ``*.pt2``) see the caller's.
    """
    directory = _target_directory(path)
    temporary = os.path.join(directory, f".torchstitch-{uuid.uuid4().hex[:8]}-{os.path.basename(path)}")
    try:
        fmt.save(module, temporary, extra, options)
        os.replace(temporary, path)
    except StitchError:
        raise
    except Exception as exc:  # torch's errors say nothing of the model or the format
        raise ArtifactError(
            f"format {fmt.name!r} could not save the model to {path!r}: {exception_summary(exc)}", path=""
        ) from exc
    finally:
        _remove_quietly(temporary)


def _target_directory(path: str) -> str:
    """The existing directory ``path`` goes into; :class:`ArtifactError` (an ``OSError``) if none."""
    if os.path.isdir(path):
        raise _path_error(path, errno.EISDIR, f"cannot save to {path!r}: it is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return directory
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise _path_error(
            path, errno.ENOTDIR, f"cannot save to {path!r}: {existing!r} is a file, not a directory"
        )
    raise _path_error(
        path, errno.ENOENT, f"cannot save to {path!r}: the directory {directory!r} does not exist"
    )


def _path_error(path: str, code: int, message: str) -> ArtifactError:
    """An :class:`ArtifactError` with the ``OSError`` fields of the file problem it reports."""
    error = ArtifactError(message)
    error.errno, error.strerror, error.filename = code, os.strerror(code), path
    return error


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError:  # the save failed already; its error is the one to report
        log.warning("could not remove the temporary file %s", path, exc_info=True)


def load(
    path: str | os.PathLike[str],
    *,
    map_location: Any = None,
    plugins: Iterable[object | str] | None = None,
) -> Artifact:
    """Load an artifact saved by :func:`save`, or a plain file of a known format (then without a plan).

    :raises ArtifactError: if the file does not exist (also an :class:`OSError`), no
        format can read it (the last format's error chained), or its plan is unreadable.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise _path_error(path, errno.ENOENT, f"no such file: {path!r}")
    known = formats(PluginSet.from_plugins(plugins))
    meta = _read_meta(path)
    if meta.get("format") in known:
        candidates = [known[meta["format"]]]
    else:
        candidates = list(known.values())
    failures = []
    last: Exception | None = None
    for fmt in candidates:
        try:
            module, extra = fmt.load(path, map_location)
        except Exception as exc:  # each format says why it could not read the file
            if isinstance(exc, StitchError) and len(candidates) == 1:
                raise  # the format the file names refused it (another torch, a missing library)
            failures.append(f"{fmt.name}: {exception_summary(exc)}")
            last = exc
            continue
        plan = _read_plan(path, extra.get(PLAN_FILE) or None)
        if plan is not None:
            attach_plan(module, plan)  # saving the loaded module again keeps its plan
        return Artifact(module, plan, fmt.name, meta)
    raise ArtifactError(f"{path!r} is not an artifact any format can read ({'; '.join(failures)})") from last


def _read_meta(path: str) -> dict[str, Any]:
    """The metadata document of a file saved by :func:`save`; ``{}`` if it has none that
    reads (the formats are then tried in turn, and say what is wrong with the file)."""
    try:
        text = read_zip_member(path, META_FILE)
        meta = json.loads(text) if text else {}
    except (OSError, ValueError, zipfile.BadZipFile):
        log.debug("%s: unreadable metadata", path, exc_info=True)
        return {}
    return meta if isinstance(meta, dict) else {}


def _read_plan(path: str, text: str | None) -> Plan | None:
    if text is None:
        return None
    try:
        return Plan.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"{path!r} holds a plan this torchstitch cannot read ({exception_summary(exc)}); "
            "load the module with the format's own loader (TorchScript's load) to skip it"
        ) from exc


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
