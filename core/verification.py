"""Verification: a compiled node against eager on its tracing inputs, the compiled root
against eager on ``example_inputs``, and the search for the culprit when the root differs.

Compiled modules run through ``torchstitch_verification_run`` (families wrap it: the
TorchScript plugin runs them without TorchScript's optimizer); eager ones run here.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import torch

from .errors import StitchError, VerificationError, exception_summary
from .inputs import Recording, call_for_values, same_inputs
from .ir import Node, Outcome, Plan
from .locate import Divergence, locate_with
from .options import CompileOptions
from .plugin_manager import PluginSet
from .state import CallerState
from .strategy import Strategy, TracingInputs
from .verify import Tolerance, compare

__all__ = ["Verifier"]

log = logging.getLogger(__name__)


class Verifier:
    """Checks the compiled pieces of one compile call against the caller's eager model.

    It shares the call's bookkeeping (``outcomes``, ``compiled_paths``, ``verified_on``:
    the engine fills them) and is told the recording once it exists.
    """

    def __init__(
        self,
        options: CompileOptions,
        plugins: PluginSet,
        plan: Plan,
        modules: dict[str, torch.nn.Module],
        state: CallerState,
        example_sets: list[tuple[Any, ...]] | None,
        outcomes: dict[str, Outcome],
        compiled_paths: list[str],
        verified_on: dict[str, TracingInputs],
    ) -> None:
        self.options = options
        self.plugins = plugins
        self.plan = plan
        self.modules = modules
        self.state = state
        self.example_sets = example_sets
        self.outcomes = outcomes
        self.compiled_paths = compiled_paths
        self.verified_on = verified_on
        #: the eager run on ``example_inputs`` (``None``: none was made)
        self.recording: Recording | None = None
        #: ids of the caller's modules whose buffers the recording run changed
        self.stateful: set[int] = set()

    def verify_node(
        self,
        node: Node,
        strategy: Strategy,
        compiled: torch.nn.Module,
        inputs: TracingInputs,
        source: str | None,
    ) -> tuple[int, float]:
        original = self.modules[node.path]
        claimant = None if node.claim is None else node.claim.claimant
        recorded = None
        if (
            self.recording is not None
            and inputs is self.recording.inputs.get(node.path)
            and not any(id(m) in self.stateful for m in original.modules())
        ):
            recorded = self.recording.outputs[node.path]
        largest = 0.0
        count = 0
        for i, call in enumerate(inputs):
            for method, args in call.items():
                if recorded is not None:
                    expected = recorded[i]
                else:
                    expected = self._run(node, strategy, getattr(original, method), args, "eager")
                _check_verifiable(expected, node.path, strategy.name, claimant)
                actual = self._run(node, strategy, getattr(compiled, method), args, "compiled")
                diff, mismatch = compare(
                    expected, actual, self._tolerance(node.path, strategy), self._keeps_fields(strategy)
                )
                largest = max(largest, diff)
                count += 1
                if mismatch is not None:
                    raise VerificationError(
                        f"{strategy.name} of {node.short_type_name} differs from eager on tracing input "
                        f"{i} ({method}, from {source}) at {mismatch.where}: {mismatch.detail}"
                        + (
                            ". A data-dependent branch fixed by the recorded run is the usual "
                            f"cause: claim the module {strategy.fallbacks[0]!r} instead"
                            if i > 0 and strategy.fallbacks
                            else ""
                        ),
                        max_abs_diff=mismatch.max_abs_diff,
                        path=node.path,
                        strategy=strategy.name,
                        claimant=None if node.claim is None else node.claim.claimant,
                    )
        return count, largest

    def _keeps_fields(self, strategy: Strategy) -> list[str]:
        """``strategy``'s fallbacks that compile the source (no recorded run): those keep a
        NamedTuple output's fields, which a recorded run loses."""
        strategies = self.plugins.strategies
        return [n for n in strategy.fallbacks if n in strategies and not strategies[n].needs_inputs]

    def _run(self, node: Node, strategy: Strategy, fn, args: tuple, which: str) -> Any:
        self.state.restore(self.modules[node.path])
        try:
            if which == "compiled":
                return self.plugins.call_around(
                    "torchstitch_verification_run", function=fn, args=args, path=node.path
                )
            return call_for_values(fn, args)
        except Exception as exc:
            raise VerificationError(
                f"running the {which} module on its tracing inputs raised {exception_summary(exc)}",
                path=node.path,
                strategy=strategy.name,
                claimant=None if node.claim is None else node.claim.claimant,
            ) from exc

    def verify_root(self, compiled: torch.nn.Module) -> None:
        """The compiled model against eager on every input set of ``example_inputs``."""
        assert self.recording is not None and self.example_sets is not None
        claim = self.plan.root.claim
        largest = 0.0
        for number, (args, expected) in enumerate(zip(self.example_sets, self.recording.root_outputs), 1):
            _check_verifiable(
                expected,
                "",
                None if claim is None else claim.strategy,
                None if claim is None else claim.claimant,
            )
            largest = max(largest, self._verify_root_on(compiled, args, expected, self._label(number)))
        previous = self.outcomes.get("", Outcome())
        self.outcomes[""] = attrs.evolve(
            previous,
            n_verified=previous.n_verified + self._sets_not_yet_verified(),
            max_abs_diff=max(largest, previous.max_abs_diff or 0.0),
        )

    def _label(self, number: int) -> str:
        assert self.example_sets is not None
        n = len(self.example_sets)
        return "example_inputs" if n == 1 else f"example_inputs set {number} (of {n})"

    def _verify_root_on(
        self, compiled: torch.nn.Module, args: tuple[Any, ...], expected: Any, label: str
    ) -> float:
        claim = self.plan.root.claim
        self.state.restore()
        try:
            actual = self.plugins.call_around(
                "torchstitch_verification_run", function=compiled, args=args, path=""
            )
        except Exception as exc:
            raise self._root_raised(compiled, args, label, exc) from exc
        diff, mismatch = compare(expected, actual, self._tolerance(""))
        if mismatch is not None:
            culprits = self._culprits(compiled, args)
            if culprits:
                where = "; ".join(str(c) for c in culprits)
                hint = f" Compiled submodules that diverge on their own inputs (deepest): {where}"
            else:
                hint = (
                    " No compiled submodule diverges on its own inputs: the difference comes from "
                    "how they are combined (e.g. a traced branch in a parent)"
                )
            raise VerificationError(
                f"the compiled model differs from eager on {label} at {mismatch.where}: "
                f"{mismatch.detail}.{hint}",
                culprits=culprits,
                max_abs_diff=mismatch.max_abs_diff,
                path="",
                strategy=None if claim is None else claim.strategy,
                claimant=None if claim is None else claim.claimant,
            )
        return diff

    def _culprits(self, compiled: torch.nn.Module, args: tuple[Any, ...]) -> list[Divergence]:
        """The deepest compiled pieces that raise, or differ from eager, on their own inputs."""
        self.state.restore()
        try:
            return locate_with(
                self.plugins,
                self.modules[""],
                compiled,
                args,
                paths=self.compiled_paths,
                tolerance=self._tolerance(""),
            )
        except StitchError:  # the eager model failed this time: no piece to blame
            log.debug("could not probe the compiled pieces", exc_info=True)
            return []

    def _root_raised(
        self, compiled: torch.nn.Module, args: tuple[Any, ...], label: str, exc: Exception
    ) -> VerificationError:
        """The error for a compiled model that raised on ``args`` (``label``): at the deepest
        compiled pieces that fail on their own inputs (a child whose unused (TorchScript)
        method runs, or whose output a Python parent cannot use), else at the root."""
        culprits = self._culprits(compiled, args)
        where = culprits[0].path if culprits else ""
        claim = self.plan[where].claim
        summary = exception_summary(exc)
        if not culprits:
            hint = (
                " No compiled submodule fails on its own inputs: the error comes from how they are combined"
            )
        elif where:
            hint = " Compiled submodules that fail on their own inputs (deepest): " + "; ".join(
                str(c) for c in culprits
            )
        else:
            hint = ""  # the root itself, and none of its compiled children
        return VerificationError(
            f"the compiled model raised on {label}: {summary}"
            + ("" if summary.endswith(".") else ".")
            + hint,
            culprits=culprits,
            path=where,
            strategy=None if claim is None else claim.strategy,
            claimant=None if claim is None else claim.claimant,
        )

    def _sets_not_yet_verified(self) -> int:
        """How many input sets the root's own check did not already run on (a traced root's
        recorded inputs are ``example_inputs``): the plan counts distinct inputs."""
        assert self.example_sets is not None
        done = [call.get("forward") for call in self.verified_on.get("", ())]
        return sum(1 for args in self.example_sets if not any(same_inputs(d, args) for d in done))

    def _tolerance(self, path: str, strategy: Strategy | None = None) -> Tolerance:
        """Verification's tolerance at ``path``: the caller's ``atol``/``rtol``, else the loosest
        that ``strategy`` and the strategies of the nodes compiled below ``path`` declare, else
        ``None`` (by dtype): a module is as close to eager as its least precise piece."""
        caller = self.options.tolerance
        prefix = f"{path}." if path else ""
        declared = [] if strategy is None else [strategy]
        declared += [
            self.plugins.strategies[self.outcomes[p].attempts[-1].strategy]
            for p in self.compiled_paths
            if p.startswith(prefix)
        ]
        atol = max((s.atol for s in declared if s.atol is not None), default=None)
        rtol = max((s.rtol for s in declared if s.rtol is not None), default=None)
        return Tolerance(
            atol if caller.atol is None else caller.atol,
            rtol if caller.rtol is None else caller.rtol,
        )


def _check_verifiable(expected: Any, path: str, strategy: str | None, claimant: str | None) -> None:
    """Refuse to verify outputs on the meta device: they have shapes but no values to compare."""
    leaves = torch.utils._pytree.tree_leaves(expected)
    if any(isinstance(leaf, torch.Tensor) and leaf.is_meta for leaf in leaves):
        raise VerificationError(
            "cannot verify against eager: the eager output is on the meta device, which has "
            "no values to compare; pass verify=False to compile a model on the meta device",
            path=path,
            strategy=strategy,
            claimant=claimant,
        )
