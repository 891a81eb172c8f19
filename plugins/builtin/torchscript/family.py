"""What every TorchScript node shares: deprecation report, unoptimized verification, freeze.

Hook wrappers and finalize steps of the ``torchscript`` family, as pytest's
terminal reporter is a plugin around the runner: the engine calls the hooks, and
this plugin wraps them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import torch

from torchstitch import NodeCompileError, Plan, PlanError, Strategy, hookimpl
from torchstitch.plugins.toolkit import exception_summary

from .deprecation import report_torchscript_deprecations

log = logging.getLogger(__name__)

#: the artifact family of this package's strategies
FAMILY = "torchscript"


@hookimpl(wrapper=True)
def torchstitch_compile_run() -> Any:
    """torch warns once per ``torch.jit`` call: say it once per compile call instead."""
    with report_torchscript_deprecations():
        return (yield)


@hookimpl(wrapper=True)
def torchstitch_verification_run() -> Any:
    """Run a compiled module for verification without TorchScript's graph optimizer.

    A TorchScript module's first optimized calls are profiling runs that also fix the
    shapes it specializes for: 2 of the 3 ms torchstitch spent on the seed example.
    Verification checks what was traced or scripted, not torch's optimizer, so it runs
    the graph as compiled, and the caller's first real calls profile real shapes.
    The switch is thread-local and affects TorchScript only.
    """
    with torch.jit.optimized_execution(False):
        return (yield)


def _root_strategy(plan: Plan, strategies: Mapping[str, Strategy]) -> Strategy | None:
    claim = plan.root.claim
    return None if claim is None else strategies[claim.strategy]


@hookimpl
def torchstitch_check_plan(
    plan: Plan, module: torch.nn.Module, options: Any, strategies: Mapping[str, Strategy]
) -> None:
    """``freeze=True`` needs a TorchScript root in eval mode."""
    if not options.freeze:
        return
    root = plan.root
    strategy = _root_strategy(plan, strategies)
    if root.claim is None or strategy is None or strategy.family != FAMILY:
        raise PlanError(
            "freeze=True needs a TorchScript root, but the root "
            + ("stays in Python" if strategy is None else f"is claimed {strategy.name!r}")
            + ": claim it 'script' or 'trace' (root_strategy=, ts.script(), a Rule with path='')",
            path="",
            strategy=None if root.claim is None else root.claim.strategy,
            claimant=None if root.claim is None else root.claim.claimant,
        )
    if module.training:
        raise PlanError(
            "freeze=True needs a model in eval mode (torch.jit.freeze folds parameters into "
            "constants for inference): call model.eval() first",
            path="",
            strategy=root.claim.strategy,
            claimant=root.claim.claimant,
        )


@hookimpl
def torchstitch_finalize(module: torch.nn.Module, plan: Plan, options: Any) -> torch.nn.Module | None:
    """``freeze=True``: ``torch.jit.freeze`` the compiled root (checked at plan time)."""
    if not options.freeze:
        return None
    start = time.perf_counter()
    try:
        with torch.jit.optimized_execution(True):
            frozen = torch.jit.freeze(module)
    except Exception as exc:
        claim = plan.root.claim
        raise NodeCompileError(
            f"torch.jit.freeze failed on the compiled root: {exception_summary(exc)}",
            path="",
            strategy=None if claim is None else claim.strategy,
            claimant=None if claim is None else claim.claimant,
        ) from exc
    log.debug("froze the root in %.1f ms", (time.perf_counter() - start) * 1e3)
    return frozen


@hookimpl
def torchstitch_runs_alone(module: torch.nn.Module) -> bool | None:
    """The submodules of a traced module are parts of one trace: torch refuses to call them."""
    traced = torch.jit._trace
    if isinstance(module, traced.TracedModule) and not isinstance(module, traced.TopLevelTracedModule):
        return False
    return None
