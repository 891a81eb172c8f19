"""Culprit localisation: which compiled submodules diverge from their eager twins, deepest first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import torch

from .errors import display_path, exception_summary
from .inputs import as_example_args, call_for_values, record
from .plugin_manager import PluginSet
from .state import CallerState, preserved_state
from .verify import Tolerance, compare

__all__ = ["Divergence", "locate"]


@attrs.frozen
class Divergence:
    """A compiled submodule whose outputs differ from the eager one's on the same inputs."""

    #: dotted path of the submodule (``""``: the root)
    path: str
    #: largest absolute difference (``nan`` for NaN or a structural mismatch)
    max_abs_diff: float
    #: where in the output and how
    detail: str

    def __str__(self) -> str:
        return f"{display_path(self.path)}: {self.detail}"


def _counterpart(compiled: torch.nn.Module, path: str) -> torch.nn.Module | None:
    module: Any = compiled
    for name in path.split(".") if path else ():
        module = getattr(module, name, None)
        if not isinstance(module, torch.nn.Module):
            return None
    return module


def locate(
    eager: torch.nn.Module,
    compiled: torch.nn.Module,
    example_inputs: Any,
    *,
    paths: Iterable[str] | None = None,
    tolerance: Tolerance | None = None,
    plugins: Iterable[object | str] | None = None,
) -> list[Divergence]:
    """Compare each compiled submodule with its eager twin on the inputs it received.

    ``eager`` runs once on ``example_inputs`` with every submodule's inputs and
    outputs recorded; each compiled counterpart (found by path in ``compiled``)
    then runs on the same inputs.  A counterpart that raises diverges too (its
    detail is the exception, TorchScript's interpreter errors reduced to their
    original cause).  Returns the *deepest* divergent submodules — those with no
    divergent compiled descendant — since a parent that contains a wrong child
    is wrong too.  Every run starts from the buffers ``eager`` and ``compiled``
    had when called, and both are left with them.

    :param paths: the submodules to check; by default every path whose module in
        ``compiled`` is a different object from the one in ``eager``.
    :param plugins: as for :func:`~torchstitch.compile`: the plugins that say which
        compiled submodules cannot run alone (``torchstitch_runs_alone``).
    """
    return locate_with(
        PluginSet.from_plugins(plugins), eager, compiled, example_inputs, paths=paths, tolerance=tolerance
    )


def locate_with(
    plugin_set: PluginSet,
    eager: torch.nn.Module,
    compiled: torch.nn.Module,
    example_inputs: Any,
    *,
    paths: Iterable[str] | None = None,
    tolerance: Tolerance | None = None,
) -> list[Divergence]:
    """:func:`locate` with the call's plugins (the engine's)."""

    def runs_alone(module: torch.nn.Module) -> bool:
        return plugin_set.call("torchstitch_runs_alone", module=module) is not False

    args = as_example_args(example_inputs)
    if args is None:
        raise TypeError("locate() needs example_inputs to run the eager model on")
    tolerance = tolerance or Tolerance()
    modules = dict(eager.named_modules(remove_duplicate=False))
    if paths is None:
        paths = [
            p
            for p, m in modules.items()
            if (c := _counterpart(compiled, p)) is not None and c is not m and runs_alone(c)
        ]
    targets = {p: modules[p] for p in paths if p in modules}
    diverging: list[Divergence] = []
    with preserved_state(eager) as state:
        state.add_compiled(eager, compiled)
        recording = record(eager, args, targets, limit=2, modules=modules)
        stateful = state.changed()
        for path, module in targets.items():
            twin = _counterpart(compiled, path)
            if twin is None or not runs_alone(twin):
                continue
            if any(id(m) in stateful for m in module.modules()):
                expected = None  # the recording ran it from changed buffers: run it afresh
            else:
                expected = recording.outputs.get(path, ())
            calls = recording.inputs.get(path, ())
            found = _divergence(path, module, twin, calls, expected, state, tolerance)
            if found is not None:
                diverging.append(found)

    def has_divergent_descendant(path: str) -> bool:
        prefix = f"{path}." if path else ""
        return any(d.path != path and d.path.startswith(prefix) for d in diverging)

    return [d for d in diverging if not has_divergent_descendant(d.path)]


def _divergence(
    path: str,
    module: torch.nn.Module,
    twin: torch.nn.Module,
    calls: Sequence[Mapping[str, tuple[Any, ...]]],
    expected_outputs: Sequence[Any] | None,
    state: CallerState,
    tolerance: Tolerance,
) -> Divergence | None:
    """The first of ``calls`` on which ``twin`` differs from ``module``; each run starts from
    the caller's state (``expected_outputs``: the recorded outputs, ``None``: run ``module``)."""
    for i, call in enumerate(calls):
        args = call["forward"]
        if expected_outputs is None:
            state.restore()
            expected = call_for_values(module, args)
        else:
            expected = expected_outputs[i]
        state.restore()
        try:
            actual = call_for_values(twin, args)
        except Exception as exc:  # a compiled piece that cannot even run is a culprit
            return Divergence(path, float("nan"), f"raised {exception_summary(exc)}")
        _, mismatch = compare(expected, actual, tolerance)
        if mismatch is not None:
            return Divergence(path, mismatch.max_abs_diff, f"{mismatch.where}: {mismatch.detail}")
    return None
