"""Reporting: the warnings a compile call ends with (nothing compiled, fallbacks, nodes fixed
in training mode); observers of each node are the ``torchstitch_node_compiled`` hook."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ._warn import warn
from .errors import TorchstitchWarning, display_path
from .ir import Outcome, Plan
from .plugin_manager import PluginSet
from .strategy import Strategy

__all__ = ["warn_fallbacks", "warn_if_nothing_compiles", "warn_training_mode"]

log = logging.getLogger(__name__)


def warn_if_nothing_compiles(plan: Plan, plugin_set: PluginSet) -> None:
    """``ts.compile`` reads like ``torch.compile``, but compiles only what is claimed: say so
    when nothing is, rather than hand back the model in Python without a word."""
    if any(
        node.claim is not None and plugin_set.strategies[node.claim.strategy].compiles for node in plan.walk()
    ):
        return
    root = plan.root.short_type_name
    # in registration order: the built-ins first
    compiling = [name for name, s in plugin_set.strategies.items() if s.compiles]
    example = next((n for n in compiling if not plugin_set.strategies[n].needs_inputs), "NAME")
    # TorchScript is deprecated: where torch.export is registered, it is the road to name first
    export_road = (
        "ts.compile(model, target='export', example_inputs=...) exports the whole model; or "
        if any(plugin_set.strategies[n].family == "export" for n in compiling)
        else ""
    )
    warn(
        f"no module of {root} is claimed by a compiling strategy, so nothing was compiled and "
        "the model runs in Python (torchstitch compiles what @ts.compile_mode, rules= or a "
        f"plugin claims). {export_road}claim the root: ts.script(model, ...), "
        "ts.trace(model, example_inputs), "
        f"or ts.compile(model, root_strategy={example!r}) (or rules=[ts.Rule({example!r}, path='')]); "
        f"compiling strategies: {', '.join(map(repr, compiling)) or '(none)'}",
        TorchstitchWarning,
    )


def warn_training_mode(
    fixed_in_training: Mapping[str, tuple[str, list[str]]], strategies: Mapping[str, Strategy]
) -> None:
    """Nodes whose compiled form fixed the training flag while modules in them depend on it."""
    if not fixed_in_training:
        return
    nodes = "; ".join(
        f"{display_path(path)} ({strategy}: {', '.join(display_path(p) for p in dependent)})"
        for path, (strategy, dependent) in fixed_in_training.items()
    )
    # strategies that compile without a recorded run follow the flag at run time
    followers = sorted(
        {
            name
            for strategy, _ in fixed_in_training.values()
            for name in strategies[strategy].fallbacks
            if name in strategies and not strategies[name].needs_inputs
        }
    )
    warn(
        f"{len(fixed_in_training)} node(s) compiled in training mode hold modules whose "
        f"computation depends on it (batch statistics, dropout): {nodes}. Their compiled form "
        "keeps training behaviour after .eval(); call model.eval() before compiling for "
        "inference"
        + (
            f", or claim them {' or '.join(map(repr, followers))}, which follow .train()/.eval()"
            if followers
            else ""
        ),
        TorchstitchWarning,
    )


def warn_fallbacks(outcomes: Mapping[str, Outcome]) -> None:
    """Nodes where a strategy failed and another (or the parent) took over."""
    fell = [
        f"{display_path(p)} ({' -> '.join(a.strategy for a in o.attempts)}"
        + (", left to its parent" if all(a.error_type for a in o.attempts) else "")
        + ")"
        for p, o in outcomes.items()
        if any(a.error_type for a in o.attempts)
    ]
    if fell:
        warn(
            f"{len(fell)} node(s) fell back after their strategy failed: {'; '.join(fell)}. "
            "See CompileResult.fallbacks or the plan for the errors.",
            TorchstitchWarning,
        )
