"""Culprit localisation: which compiled submodules diverge from their eager twins, deepest first."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import torch

from .errors import display_path, exception_summary
from .inputs import as_example_args, call_for_values, record
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


def _callable_alone(module: torch.nn.Module) -> bool:
    # the submodules of a traced module are parts of one trace: torch refuses to call them
    traced = torch.jit._trace.TracedModule
    return not isinstance(module, traced) or isinstance(module, torch.jit._trace.TopLevelTracedModule)


def locate(
    eager: torch.nn.Module,
    compiled: torch.nn.Module,
    example_inputs: Any,
    *,
    paths: Iterable[str] | None = None,
    tolerance: Tolerance | None = None,
) -> list[Divergence]:
    """Compare each compiled submodule with its eager twin on the inputs it received.

    ``eager`` runs once on ``example_inputs`` with every submodule's inputs and
    outputs recorded; each compiled counterpart (found by path in ``compiled``)
    then runs on the same inputs.  A counterpart that raises diverges too (its
    detail is the exception, TorchScript's interpreter errors reduced to their
    original cause).  Returns the *deepest* divergent submodules — those with no
    divergent compiled descendant — since a parent that contains a wrong child
    is wrong too.

    :param paths: the submodules to check; by default every path whose module in
        ``compiled`` is a different object from the one in ``eager``.
    """
    args = as_example_args(example_inputs)
    if args is None:
        raise TypeError("locate() needs example_inputs to run the eager model on")
    tolerance = tolerance or Tolerance()
    modules = dict(eager.named_modules(remove_duplicate=False))
    if paths is None:
        paths = [
            p
            for p, m in modules.items()
            if (c := _counterpart(compiled, p)) is not None and c is not m and _callable_alone(c)
        ]
    targets = {p: modules[p] for p in paths if p in modules}
    recording = record(eager, args, targets, limit=2, modules=modules)

    diverging: list[Divergence] = []
    for path in targets:
        twin = _counterpart(compiled, path)
        if twin is None or not _callable_alone(twin):
            continue
        for call, expected in zip(recording.inputs.get(path, ()), recording.outputs.get(path, ())):
            try:
                actual = call_for_values(twin, call["forward"])
            except Exception as exc:  # a compiled piece that cannot even run is a culprit
                diverging.append(Divergence(path, float("nan"), f"raised {exception_summary(exc)}"))
                break
            largest, mismatch = compare(expected, actual, tolerance)
            if mismatch is not None:
                diverging.append(
                    Divergence(path, mismatch.max_abs_diff, f"{mismatch.where}: {mismatch.detail}")
                )
                break

    def has_divergent_descendant(path: str) -> bool:
        prefix = f"{path}." if path else ""
        return any(d.path != path and d.path.startswith(prefix) for d in diverging)

    return [d for d in diverging if not has_divergent_descendant(d.path)]
