"""What a compile call returns: :class:`CompileResult`."""

from __future__ import annotations

import attrs
import torch

from .ir import Attempt, Plan

__all__ = ["CompileResult"]


@attrs.frozen
class CompileResult:
    """What :meth:`~torchstitch.Engine.compile` returns."""

    #: the compiled, stitched model
    module: torch.nn.Module = attrs.field(eq=False, repr=False)
    #: the plan, each compiled node carrying its :class:`~torchstitch.Outcome`
    plan: Plan
    #: wall time of the whole call
    seconds: float

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent by each compiled node's strategy, by path."""
        return {n.path: n.outcome.seconds for n in self.plan.walk() if n.outcome is not None}

    @property
    def verification(self) -> dict[str, float]:
        """Largest difference against eager of each verified node (the root included), by path."""
        return {
            n.path: n.outcome.max_abs_diff
            for n in self.plan.walk()
            if n.outcome is not None and n.outcome.n_verified and n.outcome.max_abs_diff is not None
        }

    @property
    def fallbacks(self) -> dict[str, tuple[Attempt, ...]]:
        """Nodes where a strategy failed and another was used (``on_error="fallback"``)."""
        return {
            n.path: n.outcome.attempts
            for n in self.plan.walk()
            if n.outcome is not None and any(a.error_type for a in n.outcome.attempts)
        }

    def save(self, path: str) -> None:
        """Save the compiled module with its plan embedded (see :func:`torchstitch.save`)."""
        from .serialization import save

        save(self.module, path, plan=self.plan)
