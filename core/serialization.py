"""Saving and loading artifacts, with the plan embedded as metadata.

Artifact formats are plugins (hook ``torchstitch_artifact_formats``): the
built-in ``torchscript`` format lives in ``strategies/torchscript_format.py``;
plugins add others (``export``, ``aoti``).  Every format stores two JSON
documents beside the model: the plan and a small metadata record.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import torch

from .errors import ArtifactError, first_line
from .ir import Plan
from .plugin_manager import PluginSet
from .provenance import attach_plan, plan_of

if TYPE_CHECKING:
    from .engine import CompileResult

__all__ = ["Artifact", "ArtifactFormat", "save", "load", "read_zip_member"]

#: what the metadata's ``"plan"`` says when no plan is known for the saved module
NO_PLAN = (
    "none: the module was not returned by a torchstitch compile in this process "
    "(a copy, a re-scripted or re-loaded module, or one built without torchstitch)"
)

#: names of the two documents every format embeds (as zip members ending with them)
PLAN_FILE = "torchstitch/plan.json"
META_FILE = "torchstitch/meta.json"


@attrs.frozen
class ArtifactFormat:
    """A way of writing a compiled model to disk, provided by a plugin.

    ``save(module, path, extra, options)`` writes ``module`` and the ``extra``
    documents (``{PLAN_FILE: json, META_FILE: json}``); ``options`` are the
    caller's ``ts.save(..., options=...)`` for this format (raise
    :class:`~torchstitch.ArtifactError` for one it does not take).
    ``load(path, map_location)`` returns ``(module, extra)`` with whatever
    documents it found.
    """

    #: format name, as in ``ts.save(..., format=name)``
    name: str
    #: whether this format can save ``module`` (used when ``format`` is not given)
    accepts: Callable[[torch.nn.Module], bool] = attrs.field(eq=False, repr=False)
    #: ``save(module, path, extra, options) -> None``
    save: Callable[[Any, str, dict[str, str], dict[str, Any]], None] = attrs.field(eq=False, repr=False)
    #: ``load(path, map_location) -> (module, extra)``
    load: Callable[[str, Any], tuple[Any, dict[str, str]]] = attrs.field(eq=False, repr=False)
    #: one line for ``torchstitch strategies`` and error messages
    description: str = ""


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
    for plugin, result in plugin_set.call_all("torchstitch_artifact_formats"):
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
    compiled: torch.nn.Module | CompileResult,
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
        for ``"aoti"``).
    :raises ArtifactError: if ``compiled`` is neither a module nor a ``CompileResult``,
        no format can save the compiled root (a root left in Python is not a
        TorchScript module), or ``format`` is unknown; nothing is written then.
    """
    from .engine import CompileResult

    if isinstance(compiled, CompileResult):
        plan = compiled.plan if plan is None else plan
        compiled = compiled.module
    elif not isinstance(compiled, torch.nn.Module):
        raise ArtifactError(
            f"ts.save takes a compiled module or a CompileResult, got a {_type_name(compiled)}",
            path="",
        )
    if plan is None:
        plan = plan_of(compiled)
    known = formats(PluginSet.from_plugins(plugins))
    if format is None:
        chosen = next((f for f in known.values() if f.accepts(compiled)), None)
        if chosen is None:
            strategy = None if plan is None else plan.root.strategy
            raise ArtifactError(
                f"no artifact format accepts the compiled root, a {_type_name(compiled)}"
                + (" left in Python" if strategy is None else "")
                + f" (formats: {', '.join(sorted(known))}): claim the root 'script' or 'trace' "
                "(torchstitch.script(model) / torchstitch.trace(model, inputs)) for TorchScript",
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
        "torchstitch_version": _version(),
        "torch_version": torch.__version__,
        "plan": "embedded" if plan is not None else NO_PLAN,
    }
    extra = {META_FILE: json.dumps(meta, sort_keys=True)}
    if plan is not None:
        extra[PLAN_FILE] = plan.to_json()
    chosen.save(compiled, os.fspath(path), extra, dict(options or {}))


def load(
    path: str | os.PathLike[str],
    *,
    map_location: Any = None,
    plugins: Iterable[object | str] | None = None,
) -> Artifact:
    """Load an artifact saved by :func:`save`, or a plain file of a known format (then without a plan).

    :raises ArtifactError: if the file does not exist or no format can read it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ArtifactError(f"no such file: {path!r}")
    known = formats(PluginSet.from_plugins(plugins))
    meta_text = read_zip_member(path, META_FILE)
    meta = json.loads(meta_text) if meta_text else {}
    if meta.get("format") in known:
        candidates = [known[meta["format"]]]
    else:
        candidates = list(known.values())
    failures = []
    for fmt in candidates:
        try:
            module, extra = fmt.load(path, map_location)
        except Exception as exc:  # each format says why it could not read the file
            failures.append(f"{fmt.name}: {type(exc).__name__}: {first_line(exc)}")
            continue
        plan_text = extra.get(PLAN_FILE) or None
        plan = Plan.from_json(plan_text) if plan_text else None
        if plan is not None:
            attach_plan(module, plan)  # saving the loaded module again keeps its plan
        return Artifact(module, plan, fmt.name, meta)
    raise ArtifactError(f"{path!r} is not an artifact any format can read ({'; '.join(failures)})")


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _version() -> str:
    from .. import __version__

    return __version__
