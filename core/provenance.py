"""Which plan a compiled module was built with, carried by the compiled object itself.

``ts.compile`` returns a plain ``nn.Module``; ``ts.save(compiled, path)`` must still
embed the plan it was compiled with.  The plan rides in the compiled object's
``__dict__`` (never on the caller's modules), tagged with a weak reference to that
very object, so that:

- TorchScript's ``save``/``torch.save`` of the compiled module work as before (the
  tag pickles to nothing, and TorchScript never serialises Python attributes);
- a copy (``copy.deepcopy``), a re-scripted or a re-loaded module is a different
  object: its tag, if any, names another object, and it has no plan.
"""

from __future__ import annotations

import weakref
from typing import Any

from .ir import Plan

__all__ = ["attach_plan", "plan_of"]

_KEY = "_torchstitch_plan"


class _PlanTag:
    """A plan and the one object it belongs to."""

    __slots__ = ("owner", "plan")

    def __init__(self, owner: Any, plan: Plan) -> None:
        self.owner = weakref.ref(owner)
        self.plan = plan

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # a pickled copy is another object: it carries no plan, and needs no torchstitch to load
        return dict, ()

    def __repr__(self) -> str:
        return f"<torchstitch plan of {len(self.plan)} nodes>"


def attach_plan(module: Any, plan: Plan) -> bool:
    """Record that ``module`` was compiled with ``plan``; ``False`` if it cannot carry one.

    Only call this on objects torchstitch created: it writes ``module.__dict__``.
    """
    state = getattr(module, "__dict__", None)
    if state is None:
        return False
    try:
        state[_KEY] = _PlanTag(module, plan)
    except TypeError:  # no weak references to this type
        return False
    return True


def plan_of(module: Any) -> Plan | None:
    """The plan ``module`` was compiled with by torchstitch, or ``None``.

    ``None`` for a module torchstitch did not compile, and for a copy, a re-scripted
    or a re-loaded module (``ts.load(path).plan`` has the saved plan).
    """
    state = getattr(module, "__dict__", None)
    tag = None if state is None else state.get(_KEY)
    if isinstance(tag, _PlanTag) and tag.owner() is module:
        return tag.plan
    return None
